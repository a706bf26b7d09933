"""SecretRegistry: the contract in docs/architecture.md, refusals that name the source and never the value."""

from __future__ import annotations

import logging

import pytest

from runnerlib.security.registry import SecretRegistry
from runnerlib.security.secret_names import DEFAULT_SECRET_NAME_PATTERNS, is_secret_name, secret_names_in


def test_short_value_refused_with_a_warning_naming_source_not_value(caplog: pytest.LogCaptureFixture) -> None:
    r = SecretRegistry()
    with caplog.at_level(logging.WARNING, logger="runnerlib.secrets"):
        assert r.add("xq7", source="env TINY_TOKEN") is False
    assert len(r) == 0
    assert r.mask(b"a xq7 b") == b"a xq7 b"
    record = [rec for rec in caplog.records if rec.name == "runnerlib.secrets"]
    assert record and "env TINY_TOKEN" in record[0].getMessage()
    assert "xq7" not in caplog.text


def test_min_length_configurable() -> None:
    r = SecretRegistry(min_length=8)
    assert not r.add("1234567", source="t")
    assert r.add("12345678", source="t")
    r1 = SecretRegistry(min_length=1)
    assert r1.add("x", source="t") and r1.mask(b"axb") == b"a***b"


def test_empty_and_whitespace_values_ignored_without_warning(caplog: pytest.LogCaptureFixture) -> None:
    r = SecretRegistry()
    with caplog.at_level(logging.WARNING, logger="runnerlib.secrets"):
        assert r.add("", source="t") is False
        assert r.add(" \t\r\n ", source="t") is False
        assert r.add(b"      ", source="t") is False
    assert len(r) == 0 and not caplog.records


def test_replacement_default_and_configurable() -> None:
    r = SecretRegistry()
    r.add("secret-value", source="t")
    assert r.mask_text("x secret-value y") == "x *** y"
    g = SecretRegistry(replacement="[MASKED]")
    g.add("secret-value", source="t")
    assert g.mask_text("x secret-value y") == "x [MASKED] y"
    with pytest.raises(ValueError, match="replacement"):
        SecretRegistry(replacement="")


def test_secrets_len_and_dedup() -> None:
    r = SecretRegistry()
    assert r.add("alpha-secret", source="a")
    assert r.add(b"alpha-secret", source="b")  # already there: still masked, not counted twice
    assert r.add_many(["beta-secret", "gamma-secret", "no", ""], source="list") == 2
    assert r.secrets() == [b"alpha-secret", b"beta-secret", b"gamma-secret"]
    assert len(r) == 3
    assert "alpha" not in repr(r)


def test_mask_text_round_trips_non_utf8_and_unicode() -> None:
    r = SecretRegistry()
    r.add("pässwörd-ü", source="t")
    assert r.mask_text("é pässwörd-ü \udcff x") == "é *** \udcff x"


def test_bytes_value_with_invalid_utf8() -> None:
    r = SecretRegistry()
    assert r.add(b"\xff\xfe\x00binary", source="t")
    assert r.mask(b"<\xff\xfe\x00binary>") == b"<***>"


def test_stream_is_a_context_manager_and_masks() -> None:
    r = SecretRegistry()
    r.add("ctx-secret", source="t")
    out: list[bytes] = []
    with r.stream(out.append) as s:
        s.write(b"ctx-")
        s.write(b"secret!")
    assert b"".join(out) == b"***!"


@pytest.mark.parametrize("name", ["GITHUB_TOKEN", "db_password", "AWS_SECRET_ACCESS_KEY", "DEPLOY_SSH_KEY",
                                  "STRIPE_API_KEY", "AZURE_CONNECTION_STRING", "GPG_PRIVATE_KEY",
                                  "APP_SECRET", "S3_ACCESS_KEY", "DJANGO_SECRET_KEY"])
def test_secret_names(name: str) -> None:
    assert is_secret_name(name)


@pytest.mark.parametrize("name", ["PATH", "HOME", "TOKENIZER_PATH", "MY_TOKENS", "PASSWORD_POLICY_URL", ""])
def test_not_secret_names(name: str) -> None:
    assert not is_secret_name(name)


def test_secret_names_in_environment() -> None:
    env = {"PATH": "/bin", "NPM_TOKEN": "x", "A_PASSWORD": "y"}
    assert secret_names_in(env) == ["A_PASSWORD", "NPM_TOKEN"]
    assert is_secret_name("X_CUSTOM", ("*_CUSTOM",)) and not is_secret_name("X_TOKEN", ("*_CUSTOM",))
    assert "*_TOKEN" in DEFAULT_SECRET_NAME_PATTERNS


def test_wrong_types_are_refused_naming_the_source() -> None:
    r = SecretRegistry()
    with pytest.raises(TypeError, match="env X"):
        r.add(12345678, source="env X")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="use add"):
        r.add_many("a-single-string", source="list")
    assert len(r) == 0
