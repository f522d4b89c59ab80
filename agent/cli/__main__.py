"""``python -m agent.cli``, as when the command line was a single module."""

from agent.cli import main

main()
