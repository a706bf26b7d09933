"""Every source of secrets reaches the registry, and nothing about a source ever shows a value."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from secrets_testlib import PYTHON, new_secret

from runnerlib.security import secret_sources
from runnerlib.security.secret_sources import (
    SecretsDocumentError,
    argv_secret_options,
    load_secrets,
    parse_secrets_document,
    url_credentials,
    warn_argv_secrets,
)


def registered(registry) -> set[bytes]:
    return set(registry.secrets())


def test_named_variables_from_process_env_and_job_env(registry):
    a, b, c = new_secret("a"), new_secret("b"), new_secret("c")
    used = load_secrets(
        registry,
        environ={"REACTORCIDE_SECRET_ENV_NAMES": "DB_PASS, OTHER", "DB_PASS": a, "PLAIN": "not-secret-1"},
        job_env={"OTHER": b, "REACTORCIDE_SECRET_ENV_NAMES": "JOBVAR", "JOBVAR": c},
    )
    assert {a.encode(), b.encode(), c.encode()} <= registered(registry)
    assert b"not-secret-1" not in registered(registry)
    assert any("DB_PASS" in line for line in used)
    for line in used:
        for value in (a, b, c):
            assert value not in line


def test_secret_env_names_argument(registry):
    value = new_secret()
    load_secrets(registry, environ={"MY_THING": value}, job_env={}, secret_env_names="MY_THING")
    assert value.encode() in registered(registry)
    registry2 = type(registry)()
    load_secrets(registry2, environ={"MY_THING": value}, job_env={}, secret_env_names=["MY_THING"])
    assert value.encode() in registered(registry2)


def test_without_the_name_the_value_is_not_a_secret(registry):
    """The control for the test above: MY_THING is not secret-looking, so naming it is what made it secret."""
    value = new_secret()
    load_secrets(registry, environ={"MY_THING": value}, job_env={})
    assert value.encode() not in registered(registry)


def test_secret_looking_names_are_secret_in_both_envs(registry):
    a, b = new_secret(), new_secret()
    load_secrets(registry, environ={"GITHUB_TOKEN": a}, job_env={"db_password": b, "HOME": "/home/someone"})
    assert {a.encode(), b.encode()} <= registered(registry)
    assert b"/home/someone" not in registered(registry)


def test_api_token_store_password_and_socket_token_are_secrets(registry):
    api, pw, tok = new_secret("api"), new_secret("pw"), new_secret("tok")
    load_secrets(registry, environ={"REACTORCIDE_API_TOKEN": api, "REACTORCIDE_SECRETS_PASSWORD": pw},
                 job_env={"REACTORCIDE_SECRETS_TOKEN": tok})
    assert {api.encode(), pw.encode(), tok.encode()} <= registered(registry)


def test_values_list_from_argument_and_both_envs(registry):
    a, b, c, d = (new_secret(x) for x in "abcd")
    load_secrets(registry, environ={"REACTORCIDE_SECRET_VALUES_LIST": f"{a},{b}"},
                 job_env={"REACTORCIDE_SECRET_VALUES_LIST": c}, secret_values_list=f"{d},,")
    assert {x.encode() for x in (a, b, c, d)} <= registered(registry)


def test_short_values_are_refused_and_reported_without_the_value(registry, caplog):
    used = load_secrets(registry, environ={}, job_env={}, secret_values_list="ab,longer-value-1")
    assert b"ab" not in registered(registry)
    assert b"longer-value-1" in registered(registry)
    assert "1 refused" in " ".join(used)
    assert "longer-value-1" not in " ".join(used) + caplog.text


# --- URLs ----------------------------------------------------------------------------------------------------


def test_url_credentials_all_forms():
    creds = url_credentials("clone https://bot:p%40ss%2Fw0rd@example.com/repo.git now")
    assert creds == ["bot:p%40ss%2Fw0rd", "p%40ss%2Fw0rd", "bot:p@ss/w0rd", "p@ss/w0rd"]


def test_url_credentials_unescaped_at_in_password_and_token_usernames():
    assert "pa@ss" in url_credentials("https://u:pa@ss@host/x")
    token = "ghp_" + "x" * 36
    assert url_credentials(f"https://{token}@github.com/o/r") == [token]
    # ordinary user names are not secrets
    assert url_credentials("ssh://git@github.com/o/r https://deploy@host/ x@y.z") == []
    assert url_credentials("https://host/path@not-userinfo") == []


def test_url_credentials_from_env_and_secrets_file(registry, tmp_path):
    pw = new_secret("pw")
    path = tmp_path / "s.env"
    path.write_text(f"REMOTE=https://user:{pw}x@host/\n")
    load_secrets(registry, environ={"DATABASE_URL": f"postgres://app:{pw}@db:5432/x"}, job_env={},
                 secrets_file=str(path))
    assert pw.encode() in registered(registry)
    assert f"app:{pw}".encode() in registered(registry)
    assert f"{pw}x".encode() in registered(registry)


@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=200))
def test_url_credentials_never_crash(text):
    for cred in url_credentials(text):
        assert cred


# --- documents -----------------------------------------------------------------------------------------------


def test_secrets_file_json_yaml_dotenv(registry, tmp_path):
    a, b, c, d, e = (new_secret(x) for x in "abcde")
    files = {
        "s.json": json.dumps({"A": a, "nested": {"B": b}}),
        "s.yaml": f"C: {c}\nlist:\n  - {d}\n",
        "s.env": f"# comment\nexport E='{e}'\n",
    }
    for name, content in files.items():
        (tmp_path / name).write_text(content)
        load_secrets(registry, environ={}, job_env={}, secrets_file=str(tmp_path / name))
    assert {x.encode() for x in (a, b, c, d, e)} <= registered(registry)


def test_secrets_file_from_environment_variable(registry, tmp_path):
    value = new_secret()
    (tmp_path / "f").write_text(json.dumps([value]))
    load_secrets(registry, environ={"REACTORCIDE_SECRETS_FILE": str(tmp_path / "f")}, job_env={})
    assert value.encode() in registered(registry)


def test_dotenv_forms():
    doc = textwrap.dedent('''\
        A=plain value # comment
        B="with \\"quotes\\" and \\n newline"
        C='literal # not a comment'
        D="-----BEGIN KEY-----
        line1
        -----END KEY-----"
        export E=1
        F=
        G=a#b
    ''')
    parsed = dict(parse_secrets_document(doc, "f"))
    assert parsed["A"] == "plain value"
    assert parsed["B"] == 'with "quotes" and \n newline'
    assert parsed["C"] == "literal # not a comment"
    assert parsed["D"] == "-----BEGIN KEY-----\nline1\n-----END KEY-----"
    assert parsed["E"] == "1" and parsed["F"] == "" and parsed["G"] == "a#b"


@pytest.mark.parametrize(
    ("content", "line", "rule"),
    [
        ("A=SEKRET9\nB=2\nthis is not KEY=VALUE SEKRET9\n", 3, "expected KEY=VALUE"),
        ("A=1\nB='SEKRET9 unterminated\n", 2, "unterminated single-quoted"),
        ('A=1\nB="SEKRET9 unterminated\nC=3\n', 2, "unterminated double-quoted"),
        ('{"a": "SEKRET9",\n "b": }', 2, "invalid JSON"),
        ("a: [SEKRET9\nb: 2\n", 1, "invalid YAML"),  # the line where the bracket opened
        ("just a scalar SEKRET9\n", 1, "expected a mapping or a list"),
        (b"A=SEKRET9\nB=\xff\xfe\n", 2, "not valid UTF-8"),
    ],
)
def test_bad_documents_name_the_file_and_line_never_the_value(tmp_path, content, line, rule):
    path = tmp_path / "secrets.conf"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(SecretsDocumentError) as info:
        secret_sources.read_secrets_file(path)
    message = str(info.value)
    assert str(path) in message and f"line {line}" in message and rule in message
    assert "SEKRET" not in message


def test_missing_secrets_file_is_one_clear_error(tmp_path, registry):
    with pytest.raises(SecretsDocumentError, match="no-such-file.*cannot read"):
        load_secrets(registry, environ={}, job_env={}, secrets_file=str(tmp_path / "no-such-file"))


def test_yaml_errors_do_not_quote_the_document(tmp_path):
    value = new_secret()
    path = tmp_path / "bad.yaml"
    path.write_text(f"a: {value}\n  b: [\n")
    with pytest.raises(SecretsDocumentError) as info:
        secret_sources.read_secrets_file(path)
    assert value not in str(info.value)
    assert value[-8:] not in str(info.value)


def test_secrets_fd_from_a_real_pipe(registry):
    value = new_secret()
    read_fd, write_fd = os.pipe()
    os.write(write_fd, f"TOKEN={value}\n".encode())
    os.close(write_fd)
    used = load_secrets(registry, environ={}, job_env={}, secrets_fd=read_fd)
    assert value.encode() in registered(registry)
    assert used == [f"secrets fd {read_fd}: 1 value(s)"]
    with pytest.raises(OSError):
        os.fstat(read_fd)  # consumed and closed


def test_secrets_fd_inherited_by_a_child_process(tmp_path):
    """End to end: a parent hands secrets to a child on fd 3 (never argv, never environ)."""
    value = new_secret()
    script = textwrap.dedent("""
        import sys
        from runnerlib.security.registry import SecretRegistry
        from runnerlib.security.secret_sources import load_secrets
        r = SecretRegistry()
        print(load_secrets(r, environ={}, job_env={}, secrets_fd=int(sys.argv[1])))
        print(r.mask_text("value: " + open(0).read()))
    """)
    read_fd, write_fd = os.pipe()
    os.write(write_fd, json.dumps({"K": value}).encode())
    os.close(write_fd)
    proc = subprocess.run([PYTHON, "-c", script, str(read_fd)], input=value.encode(), pass_fds=(read_fd,),
                          capture_output=True, timeout=60)
    os.close(read_fd)
    assert proc.returncode == 0, proc.stderr
    assert value.encode() not in proc.stdout
    assert b"value: ***" in proc.stdout


def test_stdin_source(registry):
    value = new_secret()
    load_secrets(registry, environ={}, job_env={}, read_stdin=True, stdin=lambda: f"- {value}\n".encode())
    assert value.encode() in registered(registry)


def test_oversized_document_refused():
    with pytest.raises(SecretsDocumentError, match="limit"):
        parse_secrets_document(b"A=" + b"x" * (secret_sources.MAX_DOCUMENT_BYTES + 1), "big")


# property-based: what we write in any of the three formats parses back to the same values

_keys = st.from_regex(r"[A-Z_][A-Z0-9_]{0,10}", fullmatch=True)
_values = st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E, blacklist_characters="'\\"),
                  min_size=1, max_size=40)


@given(st.dictionaries(_keys, _values, min_size=1, max_size=8), st.sampled_from(["json", "yaml", "dotenv"]))
def test_documents_round_trip(mapping, kind):
    if kind == "json":
        text = json.dumps(mapping)
    elif kind == "yaml":
        text = yaml.safe_dump(mapping)
    else:
        text = "".join(f"{k}='{v}'\n" for k, v in mapping.items())
    assert dict(parse_secrets_document(text, "gen")) == mapping


@given(st.binary(max_size=400))
def test_any_bytes_parse_or_fail_cleanly(data):
    try:
        pairs = parse_secrets_document(data, "fuzz")
    except SecretsDocumentError as exc:
        assert str(exc).startswith("secrets document fuzz")
    else:
        assert all(isinstance(v, str) for _, v in pairs)


# --- argv ----------------------------------------------------------------------------------------------------


def test_argv_secret_options_names_options_not_values():
    value = new_secret()
    argv = ["run", "--secret-values-list", "a,b", f"--job-env=X={value}", "--dry-run", value]
    assert argv_secret_options(argv, [value], flags={"--dry-run"}) == [
        "--secret-values-list", "--job-env", "argument 5"]
    # without knowing --dry-run is a flag, the value is reported under the option before it
    assert argv_secret_options(argv, [value])[-1] == "--dry-run"
    assert argv_secret_options(["run", "--job-command", "make"], [value]) == []


def test_warn_argv_secrets(registry):
    value = new_secret()
    registry.add(value, source="test")
    messages: list[str] = []
    warn_argv_secrets(["run", "--job-env", f"A={value}"], registry, warn=messages.append)
    assert len(messages) == 1 and "--job-env" in messages[0] and value not in messages[0]
    assert "/proc" not in messages[0] or "command line" in messages[0]


def test_argv_is_readable_by_another_process_of_the_same_uid():
    """Why argv is unsafe (docs/secrets.md): another process reads /proc/PID/cmdline, with no privilege."""
    value = new_secret()
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", value])
    try:
        cmdline = b""
        for _ in range(1000):  # until the child has exec'd (before that its cmdline is the parent's or empty)
            with open(f"/proc/{child.pid}/cmdline", "rb") as handle:
                cmdline = handle.read()
            if b"time.sleep" in cmdline:
                break
            time.sleep(0.01)
        assert value.encode() in cmdline
    finally:
        child.kill()
        child.wait()


def test_yaml_alias_bomb_and_deep_nesting_are_refused_quickly():
    bomb = "a: &a [x1234, x1234, x1234, x1234, x1234, x1234, x1234, x1234, x1234, x1234]\n"
    for level in "bcdefghij":
        prev = chr(ord(level) - 1)
        bomb += f"{level}: &{level} [{', '.join(['*' + prev] * 10)}]\n"
    with pytest.raises(SecretsDocumentError, match="more than 100000 values"):
        parse_secrets_document(bomb, "bomb.yaml")
    with pytest.raises(SecretsDocumentError, match="nested"):
        parse_secrets_document("[" * 100000 + "]" * 100000, "deep.json")
    with pytest.raises(SecretsDocumentError, match="nested"):
        parse_secrets_document("a:\n" + "".join("  " * i + f"k{i}:\n" for i in range(1, 200)) + "  " * 200 + "v", "d.yaml")


def test_store_references_are_left_to_the_store(registry):
    """DB_PASSWORD=${secret:prod/db:password} is registered once resolved (secret_store), not as text."""
    load_secrets(registry, environ={}, job_env={"DB_PASSWORD": "${secret:prod/db:password}"})
    assert registry.secrets() == []


def test_values_list_items_are_trimmed(registry):
    a, b = new_secret(), new_secret()
    load_secrets(registry, environ={}, job_env={}, secret_values_list=f" {a} , {b}")
    assert registry.secrets() == [a.encode(), b.encode()]
