"""`python -m runnerlib`: the same as the `runnerlib` command."""

from runnerlib.cli.app import entry

if __name__ == "__main__":
    entry()
