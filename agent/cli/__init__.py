"""The ``failover-agent`` command line: check a config, preview a failover, run operations and
look after them (``ops``), try the demo.

Results go to stdout, problems and logs to stderr, so ``--json`` output can be piped as is.
Exit codes (also in ``--help`` and the README) follow what the caller does next:

* 0 -- done;
* 1 -- the operation failed or partially succeeded (an outside system refused a call, or a bug:
  see the message, which names the VMs that failed);
* 2 -- bad config or refused input: fix the file or the request and run again (nothing changed);
* 3 -- an outside system could not be reached or did not answer in time: try again later;
* 4 -- an operation is paused for a manual action: do it, then ``failover-agent ops resume OP``.
"""

from __future__ import annotations

import os
import sys

# Importing a command module registers its commands on ``app``: --help lists them in the order
# they are imported, so keep this order (not alphabetical: the import sorter is told so).
# isort: off
from agent.cli import planning  # noqa: F401  validate, plan, config
from agent.cli import operations  # noqa: F401  run, ops
from agent.cli import status  # noqa: F401  status
from agent.cli import demo  # noqa: F401  demo
from agent.cli import addresses  # noqa: F401  addresses export|import
from agent.cli import serve  # noqa: F401  serve
from agent.cli import token  # noqa: F401  token create
from agent.cli import report  # noqa: F401  report
# isort: on

# What ``agent.__main__``, the console script (``agent.cli:main``) and the tests use, and what
# others may extend (``DEMO_STEPS``), stays importable from ``agent.cli``.
from agent.cli.app import (
    ENV_LOG_LEVEL,
    EXIT_CODES_HELP,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_UNREACHABLE,
    EXIT_WAITING,
    app,
    exit_code_for,
)
from agent.cli.demo import DEMO_STEPS, DEMO_STORE_NAME, DemoOptions, DemoStep
from agent.cli.session import STORE_NAME
from agent.cli.vocabulary import OPERATION_KINDS

__all__ = [
    "DEMO_STEPS",
    "DEMO_STORE_NAME",
    "ENV_LOG_LEVEL",
    "EXIT_CODES_HELP",
    "EXIT_FAILED",
    "EXIT_OK",
    "EXIT_REFUSED",
    "EXIT_UNREACHABLE",
    "EXIT_WAITING",
    "OPERATION_KINDS",
    "STORE_NAME",
    "DemoOptions",
    "DemoStep",
    "app",
    "exit_code_for",
    "main",
]


def main() -> None:
    """Console-script entry point (``failover-agent``)."""

    # Windows consoles may use a legacy code page; the output is ASCII except names from the config.
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None and os.name == "nt":
            reconfigure(errors="replace")
    app(prog_name="failover-agent")
