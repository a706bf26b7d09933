"""The sandbox tests' fixtures; they and the shared helpers live in sandbox_testlib.py (a unique module name:
`from conftest import ...` picks whichever conftest another directory loaded first)."""

from netlib import server  # noqa: F401 - a fixture of the network tests
from sandbox_testlib import _runner_not_dumpable, registry, victim, workspace  # noqa: F401 - fixtures
