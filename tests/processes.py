"""How the tests start the command-line scripts: one process, or `torchrun` with gloo on a local port of its own."""

import socket
import sys


def free_port() -> int:
    """A local TCP port that nothing listens on now (another process may take it before it is used: only for
    launchers that need a port number up front)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launcher(nproc: int = 1) -> list[str]:
    """The command prefix for a script run in ``nproc`` processes: torchrun ``--standalone`` when more than one,
    whose store listens on a port the system picks, so test workers running side by side never race for one."""
    if nproc == 1:
        return [sys.executable]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc)]
