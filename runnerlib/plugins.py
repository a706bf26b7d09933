"""Lifecycle plugins: custom behaviour at each phase of a job, without forking runnerlib.

A plugin subclasses `Plugin`, names the phases it supports, and implements one method per phase (the phase's
value: `pre_validation`, `post_execution`, ...). Plugins run in ascending `priority` within a phase (ties in
registration order). Each call is timed; the timings appear in the job summary.

Invariant: a plugin's exception never escapes unmasked and never stops the CLEANUP phase of the other plugins.
Outside CLEANUP an exception fails the job (ON_ERROR then runs), because a plugin that was meant to set up the
job and could not is a failed job, not a warning.

Example::

    import runnerlib
    from runnerlib.plugins import Plugin, PluginPhase

    class Notify(Plugin):
        def __init__(self):
            super().__init__("notify", priority=50)

        def supported_phases(self):
            return [PluginPhase.POST_EXECUTION]

        def post_execution(self, context):
            print("exit code", context.exit_code)

    runnerlib.register_plugin(Notify())
"""

from __future__ import annotations

import enum
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any


class PluginPhase(enum.Enum):
    """The points of a job's lifecycle at which plugins run, in the order they fire."""

    PRE_VALIDATION = "pre_validation"
    POST_VALIDATION = "post_validation"
    PRE_SOURCE_PREP = "pre_source_prep"
    POST_SOURCE_PREP = "post_source_prep"
    PRE_EXECUTION = "pre_execution"
    POST_EXECUTION = "post_execution"
    ON_ERROR = "on_error"
    CLEANUP = "cleanup"
    # Older names of the execution phases (runnerlib used to spawn a container there). Enum aliases: the
    # same members, so `PluginPhase.PRE_CONTAINER is PluginPhase.PRE_EXECUTION`.
    PRE_CONTAINER = "pre_execution"
    POST_CONTAINER = "post_execution"


@dataclass
class PluginContext:
    """What a plugin sees and may change.

    `config` is the job's `JobConfig` (validated on assignment: a plugin that sets a bad value fails the job
    with the field named). `env` is the environment the steps will get; changes before PRE_EXECUTION reach
    them. `registry` is the job's SecretRegistry once secrets are loaded (None before POST_VALIDATION), so a
    plugin can register a secret it fetched. `exit_code` and `step_results` are set after the steps;
    `error` holds the (already masked) message of the failure that triggered ON_ERROR.
    """

    config: Any
    env: dict[str, str] = field(default_factory=dict)
    job: Any = None
    registry: Any = None
    phase: PluginPhase | None = None
    exit_code: int | None = None
    step_results: list[Any] = field(default_factory=list)
    error: str | None = None
    workspace: Any = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def register_secret(self, value: str, *, source: str = "plugin") -> bool:
        """Register a secret for masking from inside a plugin (no-op returning False before secrets load)."""
        if self.registry is None:
            return False
        return bool(self.registry.add(value, source=source))


class Plugin:
    """Base class of lifecycle plugins.

    Subclasses call `super().__init__(name, priority=...)`, return their phases from `supported_phases()`
    and implement the matching methods. The default method of a phase does nothing.
    """

    def __init__(self, name: str, priority: int = 100) -> None:
        if not name or not isinstance(name, str):
            raise ValueError("a plugin needs a non-empty name")
        self.name = name
        self.priority = int(priority)

    def supported_phases(self) -> list[PluginPhase]:
        """The phases this plugin takes part in (default: every phase it has a method for)."""
        return [phase for phase in _CANONICAL_PHASES
                if _overrides(self, phase.value) or self._legacy_method(phase) is not None]

    def pre_validation(self, context: PluginContext) -> None: ...
    def post_validation(self, context: PluginContext) -> None: ...
    def pre_source_prep(self, context: PluginContext) -> None: ...
    def post_source_prep(self, context: PluginContext) -> None: ...
    def pre_execution(self, context: PluginContext) -> None: ...
    def post_execution(self, context: PluginContext) -> None: ...
    def on_error(self, context: PluginContext) -> None: ...
    def cleanup(self, context: PluginContext) -> None: ...

    # Older method names, kept so plugins written for PRE_CONTAINER/POST_CONTAINER keep working.
    def _legacy_method(self, phase: PluginPhase) -> Callable[[PluginContext], None] | None:
        legacy = {PluginPhase.PRE_EXECUTION: "pre_container", PluginPhase.POST_EXECUTION: "post_container"}
        name = legacy.get(phase)
        return getattr(self, name, None) if name else None

    def __repr__(self) -> str:
        return f"<Plugin {self.name!r} priority={self.priority}>"


# Iterating an Enum skips aliases, so this is the eight phases in lifecycle order.
_CANONICAL_PHASES: list[PluginPhase] = list(PluginPhase)


def _overrides(plugin: Plugin, method: str) -> bool:
    for klass in type(plugin).__mro__:
        if klass is Plugin:
            return False
        if method in klass.__dict__:
            return True
    return False


class PluginError(RuntimeError):
    """A plugin failed; the message is already masked and names the plugin and phase."""

    def __init__(self, plugin: str, phase: PluginPhase, message: str) -> None:
        super().__init__(f"plugin {plugin!r} failed in {phase.value}: {message}")
        self.plugin = plugin
        self.phase = phase


@dataclass
class PluginTiming:
    """How long one plugin took in one phase, and whether it failed."""

    plugin: str
    phase: PluginPhase
    duration: float
    error: str | None = None
    started: float | None = None  # time.time() at the call (for its trace span)


class PluginManager:
    """An ordered set of plugins and the timings of their calls. Thread-safe registration."""

    def __init__(self, plugins: Iterable[Plugin] = ()) -> None:
        self._lock = threading.Lock()
        self._plugins: list[Plugin] = []
        self.timings: list[PluginTiming] = []
        for plugin in plugins:
            self.register(plugin)

    def register(self, plugin: Plugin) -> None:
        """Add a plugin; a second plugin with the same name is refused (two copies would both run)."""
        if not isinstance(plugin, Plugin):
            raise TypeError(f"register_plugin expects a Plugin, got {type(plugin).__name__}")
        with self._lock:
            if any(p.name == plugin.name for p in self._plugins):
                raise ValueError(f"a plugin named {plugin.name!r} is already registered")
            self._plugins.append(plugin)

    def unregister(self, name: str) -> None:
        with self._lock:
            self._plugins = [p for p in self._plugins if p.name != name]

    def clear(self) -> None:
        with self._lock:
            self._plugins.clear()
            self.timings.clear()

    @property
    def plugins(self) -> list[Plugin]:
        """Plugins in priority order (stable: registration order breaks ties)."""
        with self._lock:
            return sorted(self._plugins, key=lambda p: p.priority)

    def for_phase(self, phase: PluginPhase) -> list[Plugin]:
        return [p for p in self.plugins if phase in _phases_of(p)]

    def run_phase(
        self,
        phase: PluginPhase,
        context: PluginContext,
        *,
        mask: Callable[[str], str] = lambda s: s,
        continue_on_error: bool = False,
        on_error: Callable[[str], None] | None = None,
    ) -> list[str]:
        """Call every plugin of `phase` in priority order.

        With `continue_on_error` (ON_ERROR and CLEANUP) every plugin runs and the masked messages of the
        failures are returned; otherwise the first failure raises PluginError (masked).
        """
        context.phase = phase
        errors: list[str] = []
        for plugin in self.for_phase(phase):
            method = getattr(plugin, phase.value)
            if not _overrides(plugin, phase.value):
                method = plugin._legacy_method(phase) or method
            start, wall = time.monotonic(), time.time()
            error: str | None = None
            try:
                method(context)
            except (Exception, SystemExit) as exc:  # noqa: BLE001 - reported masked; sys.exit() in a plugin
                # must not skip the CLEANUP of the others either
                error = mask(failure_text(exc))
            finally:
                self.timings.append(PluginTiming(plugin.name, phase, time.monotonic() - start, error, wall))
            if error is not None:
                message = str(PluginError(plugin.name, phase, error))
                if on_error:
                    on_error(message)
                if not continue_on_error:
                    raise PluginError(plugin.name, phase, error)
                errors.append(message)
        return errors

    def timing_summary(self) -> list[tuple[str, float, int]]:
        """(plugin name, total seconds, number of calls), in first-call order."""
        totals: dict[str, list[float]] = {}
        for t in self.timings:
            entry = totals.setdefault(t.plugin, [0.0, 0])
            entry[0] += t.duration
            entry[1] += 1
        return [(name, v[0], int(v[1])) for name, v in totals.items()]


def _phases_of(plugin: Plugin) -> set[PluginPhase]:
    phases = plugin.supported_phases()
    if not isinstance(phases, (list, tuple, set, frozenset)):
        raise TypeError(f"plugin {plugin.name!r}: supported_phases() must return a list of PluginPhase")
    return {PluginPhase(p) if not isinstance(p, PluginPhase) else p for p in phases}


# The plugins registered by job code with `runnerlib.register_plugin`; the runner uses them when it is not
# given a manager of its own. One per process on purpose: a job script registers, then calls run_job.
_default_manager = PluginManager()


def default_manager() -> PluginManager:
    """The process-wide manager that `register_plugin` fills."""
    return _default_manager


def register_plugin(plugin: Plugin) -> Plugin:
    """Register `plugin` for the jobs this process runs (see the module docstring). Returns the plugin."""
    _default_manager.register(plugin)
    return plugin


def unregister_plugin(name: str) -> None:
    """Remove a plugin registered with `register_plugin`."""
    _default_manager.unregister(name)


def failure_text(exc: BaseException) -> str:
    """What a plugin's exception says, on one line without the Python class name (--debug has the
    traceback); sys.exit() in a plugin is named as such."""
    from runnerlib.exit_codes import error_text

    if isinstance(exc, SystemExit):
        return f"called sys.exit({exc.code!r})"
    return error_text(exc)
