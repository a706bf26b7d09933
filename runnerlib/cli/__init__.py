"""The `runnerlib` command line: one click group, no logic of its own.

Each command lives in the module named for its area (`app.COMMAND_MODULES`), imported only when the command
is invoked, and only parses options, calls the library and turns errors into one clear line (a traceback
only with --debug).
"""

from __future__ import annotations

from runnerlib.cli.app import entry, main

__all__ = ["entry", "main"]
