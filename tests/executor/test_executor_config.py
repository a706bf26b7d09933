"""The configuration hierarchy: each level overrides the one below, origins are reported, bad input refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from runnerlib.config import ConfigError, get_config, job_file_schema, parse_job_env, render_config


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_each_level_overrides_the_one_below(ws: Path) -> None:
    job = write(ws / "job.yaml", "job_command: from-file\nlog_format: json\nconcurrency: 3\nstep_timeout: 5\n")
    env = {"REACTORCIDE_JOB_COMMAND": "from-env", "LOG_FORMAT": "text", "REACTORCIDE_CONCURRENCY": "2"}
    cli = {"job_command": ("from-cli", "--job-command")}

    # defaults only
    c = get_config(environ={}, workspace_root=str(ws))
    assert c.job_command is None and c.log_format == "text" and c.origin("log_format") == "default"
    # file over defaults
    c = get_config(job_file=job, environ={}, workspace_root=str(ws))
    assert (c.job_command, c.log_format, c.concurrency, c.step_timeout) == ("from-file", "json", 3, 5.0)
    assert c.origin("job_command") == f"{job}:1" and c.origin("concurrency") == f"{job}:3"
    # env over file
    c = get_config(job_file=job, environ=env, workspace_root=str(ws))
    assert (c.job_command, c.log_format, c.concurrency) == ("from-env", "text", 2)
    assert c.origin("job_command") == "env REACTORCIDE_JOB_COMMAND" and c.origin("log_format") == "env LOG_FORMAT"
    assert c.origin("step_timeout") == f"{job}:4"  # untouched by the levels above
    # CLI over env
    c = get_config(job_file=job, environ=env, cli=cli, workspace_root=str(ws))
    assert c.job_command == "from-cli" and c.origin("job_command") == "option --job-command"
    # get_config arguments over everything
    c = get_config(job_file=job, environ=env, cli=cli, workspace_root=str(ws), job_command="from-arg")
    assert c.job_command == "from-arg" and c.origin("job_command") == "argument job_command"


def test_derived_defaults_follow_the_workspace_root(ws: Path) -> None:
    c = get_config(environ={"REACTORCIDE_WORKSPACE_ROOT": str(ws)}, job_command="x")
    assert c.code_dir == f"{ws}/src" and c.job_dir == c.code_dir and c.ci_dir == f"{ws}/ci"
    assert c.artifacts_dir == f"{ws}/artifacts" and c.triggers_file == f"{ws}/triggers.json"
    assert c.origin("workspace_root") == "env REACTORCIDE_WORKSPACE_ROOT"
    assert c.origin("job_dir") == "default (code_dir)"
    assert get_config(environ={}).workspace_root == "/job"


def test_worker_environment_names(ws: Path) -> None:
    env = {
        "REACTORCIDE_CODE_DIR": f"{ws}/src", "REACTORCIDE_JOB_DIR": f"{ws}/src/sub",
        "REACTORCIDE_JOB_COMMAND": "make test", "REACTORCIDE_JOB_ENV": "A=1\nB=two",
        "REACTORCIDE_JOB_ID": "42", "REACTORCIDE_QUEUE": "q", "REACTORCIDE_IN_CONTAINER": "true",
        "REACTORCIDE_SOURCE_TYPE": "git", "REACTORCIDE_SOURCE_URL": "https://example.com/r.git",
        "REACTORCIDE_SOURCE_REF": "main", "REACTORCIDE_CI_SOURCE_TYPE": "copy",
        "REACTORCIDE_CI_SOURCE_URL": "/srv/ci", "REACTORCIDE_BRANCH": "main", "REACTORCIDE_SHA": "abc",
        "REACTORCIDE_EVENT_TYPE": "push", "REACTORCIDE_PR_NUMBER": "7",
        "REACTORCIDE_SECRET_ENV_NAMES": "DB_PASSWORD, API_KEY", "REACTORCIDE_UNTRUSTED": "1",
        "REACTORCIDE_COORDINATOR_URL": "https://ci.example.com", "REACTORCIDE_API_TOKEN": "tok-123456",
        "LOG_LEVEL": "debug", "REACTORCIDE_PLUGIN_DIR": f"{ws}/p1:{ws}/p2",
    }
    c = get_config(environ=env, workspace_root=str(ws))
    assert c.job_env == {"A": "1", "B": "two"} and c.job_id == "42" and c.in_container is True
    assert c.secret_env_names == ["DB_PASSWORD", "API_KEY"] and c.untrusted is True
    assert c.log_level == "DEBUG" and c.plugin_dirs == [f"{ws}/p1", f"{ws}/p2"]
    assert c.job_variables()["branch"] == "main" and c.job_variables()["pr_number"] == "7"
    assert "tok-123456" in c.secret_values()


def test_git_url_alias_means_a_git_source(ws: Path) -> None:
    c = get_config(environ={}, workspace_root=str(ws),
                   cli={"git_url": ("https://e.com/r.git", "--git-url"), "git_ref": ("dev", "--git-ref")})
    assert (c.source_type, c.source_url, c.source_ref) == ("git", "https://e.com/r.git", "dev")
    assert c.origin("source_url") == "option --git-url"
    with pytest.raises(ConfigError, match="git_url.*option --git-url.*source_type"):
        get_config(environ={}, workspace_root=str(ws),
                   cli={"source_type": ("copy", "--source-type"), "git_url": ("https://e.com/r.git", "--git-url")})
    with pytest.raises(ConfigError, match="contradicts source_url"):
        get_config(environ={}, workspace_root=str(ws), source_url="https://a/x.git", git_url="https://b/y.git",
                   source_type="git")


@pytest.mark.parametrize(
    ("settings", "field", "rule"),
    [
        ({"source_type": "none", "source_url": "https://e.com/r.git"}, "source_url", "source_type is none"),
        ({"source_url": "https://e.com/r.git"}, "source_url", "source_type is not set"),
        ({"source_type": "git"}, "source_type", "source_url is not set"),
        ({"source_type": "copy", "source_url": "/x", "source_ref": "main"}, "source_ref", "no meaning"),
        ({"ci_source_type": "none", "ci_source_url": "x"}, "ci_source_url", "ci_source_type is none"),
        ({"container": True}, "container", "runner_image"),
        ({"coordinator_url": "http://ci.example.com"}, "coordinator_url", "allow-insecure-transport"),
        ({"coordinator_url": "ftp://x"}, "coordinator_url", "http"),
        ({"job_command": "a", "job_args": ["b"]}, "job_args", "use one"),
        ({"concurrency": 0}, "concurrency", "greater than or equal to 1"),
        ({"log_format": "xml"}, "log_format", "'text' or 'json'"),
        ({"secret_env_names": ["A-B"]}, "secret_env_names", "not a valid environment variable name"),
        ({"step_timeout": -1}, "step_timeout", "greater than 0"),
    ],
)
def test_contradictions_and_bad_values_are_refused(ws: Path, settings: dict, field: str, rule: str) -> None:
    with pytest.raises(ConfigError) as info:
        get_config(environ={}, workspace_root=str(ws), **settings)
    assert info.value.field == field
    assert rule in str(info.value)
    assert f"argument {field}" in str(info.value) or "argument" in info.value.origin


def test_plain_http_coordinator_allowed_with_the_flag(ws: Path) -> None:
    c = get_config(environ={}, workspace_root=str(ws), coordinator_url="http://127.0.0.1:9",
                   allow_insecure_transport=True)
    assert c.coordinator_url == "http://127.0.0.1:9"


def test_errors_name_the_origin(ws: Path) -> None:
    job = write(ws / "job.yaml", "job_command: x\nconcurrency: many\n")
    with pytest.raises(ConfigError, match=rf"concurrency \(from {job}:2\)"):
        get_config(job_file=job, environ={}, workspace_root=str(ws))
    with pytest.raises(ConfigError, match=r"concurrency \(from env REACTORCIDE_CONCURRENCY\)"):
        get_config(environ={"REACTORCIDE_CONCURRENCY": "lots"}, workspace_root=str(ws))
    with pytest.raises(ConfigError, match=r"source_url \(from option --source-url\)"):
        get_config(environ={}, workspace_root=str(ws), cli={"source_url": ("x", "--source-url")})


def test_unknown_keys_are_refused_with_a_suggestion(ws: Path) -> None:
    job = write(ws / "job.yaml", "job_command: x\njob_comand: y\n")
    with pytest.raises(ConfigError, match=rf"job_comand \(from {job}:2\): unknown setting \(did you mean 'job_command'"):
        get_config(job_file=job, environ={}, workspace_root=str(ws))
    with pytest.raises(ConfigError, match="unknown setting"):
        get_config(environ={}, workspace_root=str(ws), not_a_field=1)


def test_json_job_file_lines(ws: Path) -> None:
    job = write(ws / "job.json", '{\n  "job_command": "x",\n  "concurrency": "no"\n}\n')
    with pytest.raises(ConfigError, match=rf"{job}:3"):
        get_config(job_file=job, environ={}, workspace_root=str(ws))


@pytest.mark.parametrize("value", ["../etc", "/etc", "src/../../x"])
def test_workspace_paths_must_stay_inside(ws: Path, value: str) -> None:
    with pytest.raises(ConfigError, match="code_dir"):
        get_config(environ={}, workspace_root=str(ws), code_dir=value)


def test_symlinked_code_dir_refused(ws: Path) -> None:
    # The attack: point the source dir at the CI tree (or anywhere) through a link inside the workspace.
    (ws / "ci").mkdir()
    (ws / "src").symlink_to(ws / "ci")
    with pytest.raises(ConfigError, match="code_dir"):
        get_config(environ={}, workspace_root=str(ws))


def test_relative_paths_are_inside_the_workspace(ws: Path) -> None:
    c = get_config(environ={}, workspace_root=str(ws), code_dir="repo", job_dir="repo/sub")
    assert c.code_dir == f"{ws}/repo" and c.job_dir == f"{ws}/repo/sub"


def test_render_masks_secret_fields(ws: Path) -> None:
    c = get_config(environ={"REACTORCIDE_API_TOKEN": "tok-abcdef"}, workspace_root=str(ws),
                   secret_values_list="s3cr3t-one,s3cr3t-two")
    text = json.dumps(render_config(c))
    assert "tok-abc" not in text and "s3cr3t" not in text and "***" in text


def test_plugins_change_config_validated_on_assignment(ws: Path) -> None:
    c = get_config(environ={}, workspace_root=str(ws))
    c.set("job_command", "echo from plugin", "plugin demo")
    assert c.origin("job_command") == "plugin demo"
    with pytest.raises(ValueError):
        c.concurrency = 0


def test_schema_covers_settings_and_steps() -> None:
    schema = job_file_schema()
    props = schema["properties"]
    for name in ("job_command", "source_url", "ci_source_type", "steps", "vars", "git_url", "plugin_dirs"):
        assert name in props
    assert schema["additionalProperties"] is False
    json.dumps(schema)


_KEYS = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,12}", fullmatch=True)
_VALUES = st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=30).map(str.strip).filter(
    lambda v: not (len(v) >= 2 and v[0] == v[-1] and v[0] in "'\""))


@given(st.dictionaries(_KEYS.filter(lambda k: k != "export"), _VALUES, max_size=8))
def test_job_env_text_round_trips(env: dict[str, str]) -> None:
    text = "\n".join(f"{k}={v}" for k, v in env.items())
    if not env:
        text = ""
    assert parse_job_env(text) == env


@given(st.text(max_size=200))
def test_job_env_parser_only_raises_config_errors(text: str) -> None:
    try:
        parse_job_env(text if "=" in text else text + "=")
    except ConfigError as exc:
        assert "line" in str(exc)


def test_job_env_file(ws: Path) -> None:
    env_file = ws / "job.env"
    env_file.write_text("# comment\nexport A=1\nB='quoted value'\n")
    c = get_config(environ={"REACTORCIDE_JOB_ENV": str(env_file)}, workspace_root=str(ws))
    assert c.job_env == {"A": "1", "B": "quoted value"}


@pytest.mark.parametrize("name", ["/dev/zero", "/nonexistent/env", "bad\0name"])
def test_job_env_file_must_be_a_small_regular_file(ws: Path, name: str) -> None:
    # /dev/zero would otherwise be read forever (found by fuzz/fuzz_config.py: NUL in the path crashed).
    with pytest.raises(ConfigError, match="job_env"):
        get_config(environ={}, workspace_root=str(ws), job_env=name)


def test_job_env_lines_are_not_echoed(ws: Path) -> None:
    with pytest.raises(ConfigError) as info:
        get_config(environ={}, workspace_root=str(ws), job_env="A=1\nsk-live-pasted-secret-here\n")
    assert "line 2 is not KEY=VALUE" in str(info.value) and "sk-live" not in str(info.value)
