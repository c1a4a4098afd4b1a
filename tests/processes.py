"""How the tests start the command-line scripts: one process, or `torchrun` with gloo on a free local port."""

import socket
import sys


def free_port() -> int:
    """A local TCP port that nothing listens on now, so test workers never collide."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launcher(nproc: int = 1) -> list[str]:
    """The command prefix for a script run in ``nproc`` processes (torchrun on a free port when more than one)."""
    if nproc == 1:
        return [sys.executable]
    port = free_port()
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--master_port", str(port)]
