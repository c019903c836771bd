"""``python -m workers``: the same worker as ``runbook worker``, without the CLI."""

from workers.main import main

if __name__ == "__main__":
    main()
