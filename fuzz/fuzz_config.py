"""atheris harness: the configuration hierarchy from arbitrary environment variables and settings.

Run: .venv/bin/python fuzz/fuzz_config.py -atheris_runs=1000

Properties: get_config either returns a JobConfig that passes its own rules, whose every origin names a
level (default / env / argument), and whose workspace paths lie inside the workspace root - or raises
ConfigError naming a field; never another exception. parse_job_env returns str -> str or raises ConfigError.
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports():
    from runnerlib.config import ConfigError, JobConfig, get_config, parse_job_env

ROOT = "/tmp/runnerlib-fuzz-root"
NAMES = ["REACTORCIDE_" + n.upper() for n in JobConfig.model_fields] + [
    "REACTORCIDE_GIT_URL", "REACTORCIDE_GIT_REF", "LOG_LEVEL", "LOG_FORMAT", "REACTORCIDE_PLUGIN_DIR"]
FIELDS = list(JobConfig.model_fields) + ["git_url", "git_ref", "plugin_dir", "nonsense"]


def TestOneInput(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    environ = {}
    for _ in range(fdp.ConsumeIntInRange(0, 6)):
        environ[fdp.PickValueInList(NAMES)] = fdp.ConsumeUnicodeNoSurrogates(40).replace("\0", "")
    overrides = {}
    for _ in range(fdp.ConsumeIntInRange(0, 4)):
        kind = fdp.ConsumeIntInRange(0, 3)
        value = [fdp.ConsumeUnicodeNoSurrogates(20), fdp.ConsumeInt(4), fdp.ConsumeBool(),
                 [fdp.ConsumeUnicodeNoSurrogates(10)]][kind]
        overrides[fdp.PickValueInList(FIELDS)] = value
    overrides.setdefault("workspace_root", ROOT)
    try:
        config = get_config(environ=environ, check_paths=False, **overrides)
    except ConfigError as exc:
        if not exc.field:
            raise AssertionError("ConfigError without a field") from None
        return
    config.check_rules()
    for field, origin in config.origins.items():
        if not origin.startswith(("default", "env ", "argument ")):
            raise AssertionError(f"{field}: odd origin {origin!r}")
    try:
        env = parse_job_env(fdp.ConsumeUnicodeNoSurrogates(200) + "=")
    except ConfigError:
        return
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in env.items()):
        raise AssertionError("job env not str -> str")


def main() -> None:
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
