"""How the tests start the command-line scripts: one process, or `torchrun` with gloo on a free local port."""

import socket
import sys


def launcher(nproc: int = 1) -> list[str]:
    """The command prefix for a script run in ``nproc`` processes (a free port, so test workers never collide)."""
    if nproc == 1:
        return [sys.executable]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--master_port", str(port)]
