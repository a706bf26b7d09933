"""A plugin shipped in the trusted CI repository: loaded from <workspace>/ci/.reactorcide/plugins."""

from runnerlib.plugins import Plugin, PluginContext, PluginPhase


class Announce(Plugin):
    def __init__(self) -> None:
        super().__init__("announce", priority=50)

    def supported_phases(self) -> list[PluginPhase]:
        return [PluginPhase.PRE_EXECUTION, PluginPhase.POST_EXECUTION, PluginPhase.CLEANUP]

    def pre_execution(self, context: PluginContext) -> None:
        print(f"[plugin announce] about to run job {context.config.job_name!r}", flush=True)

    def post_execution(self, context: PluginContext) -> None:
        print(f"[plugin announce] job finished with exit code {context.exit_code}", flush=True)

    def cleanup(self, context: PluginContext) -> None:
        print("[plugin announce] cleanup", flush=True)


PLUGINS = [Announce()]
