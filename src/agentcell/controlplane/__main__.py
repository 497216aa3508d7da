"""``python -m agentcell.controlplane``: the control plane server without the full CLI.

Tests and benchmarks start the server this way, as a real subprocess, with the same options
as ``agentcell server``.
"""

import sys

import typer

from agentcell.cli.identity_cmds import server
from agentcell.errors import Error


def _main() -> None:
    try:
        typer.run(server)
    except Error as exc:
        sys.stderr.write(f"error: {exc.diagnostics()}\n")
        sys.exit(exc.exit_code)


_main()
