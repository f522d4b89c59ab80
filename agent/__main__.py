"""``python -m agent``: the same CLI as the ``failover-agent`` command."""

from agent.cli import main

if __name__ == "__main__":
    main()
