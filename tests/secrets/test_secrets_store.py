"""The encrypted local store: the contract's format, atomic 0600 writes, and ${secret:PATH:KEY}."""

from __future__ import annotations

import base64
import json
import os
import stat
import threading

import pytest
from cryptography.fernet import Fernet
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt
from secrets_testlib import new_secret

from runnerlib.security import secret_store
from runnerlib.security.secret_store import SecretStore, SecretStoreError, resolve_secret_refs

FAST_N = 2**10  # tests only; the default is the contract's 2**18 (checked below)


@pytest.fixture
def store(tmp_path):
    target = SecretStore(tmp_path / "store", password="correct horse", scrypt_n=FAST_N)
    target.init()
    return target


def test_round_trip_and_listing(store):
    value = new_secret()
    store.set("prod/db", "password", value)
    store.set("prod/db", "user", "app-user")
    store.set("ci", "token", "tok-12345")
    assert store.get("prod/db", "password") == value
    assert store.get("prod/db", "missing") is None
    assert store.list_paths() == ["ci", "prod/db"]
    assert store.list_keys("prod/db") == ["password", "user"]
    assert store.delete("prod/db", "user") and not store.delete("prod/db", "user")
    assert store.delete("ci", "token") and store.list_paths() == ["prod/db"]
    # a fresh object (a new process) reads the same data
    assert SecretStore(store.directory, password="correct horse", scrypt_n=FAST_N).get("prod/db", "password") == value


def test_on_disk_format_is_the_contracts(store):
    """Decrypt with nothing but `cryptography` and the contract's recipe: salt beside the store, scrypt, Fernet."""
    value = new_secret()
    store.set("a/b", "k", value)
    salt = (store.directory / ".salt").read_bytes()
    assert len(salt) == 32
    key = base64.urlsafe_b64encode(Scrypt(salt=salt, length=32, n=FAST_N, r=8, p=1).derive(b"correct horse"))
    data = json.loads(Fernet(key).decrypt((store.directory / "secrets.enc").read_bytes()))
    assert data == {"a/b": {"k": value}}
    assert value.encode() not in (store.directory / "secrets.enc").read_bytes()


def test_default_cost_is_the_contracts(tmp_path):
    assert (secret_store.SCRYPT_N, secret_store.SCRYPT_R, secret_store.SCRYPT_P) == (2**18, 8, 1)
    default = SecretStore(tmp_path / "s", password="pw")
    assert default.scrypt_n == 2**18
    default.init()  # one real derivation (~0.5 s): the default parameters work end to end
    default.set("p", "k", "value-1234")
    salt = (tmp_path / "s" / ".salt").read_bytes()
    key = base64.urlsafe_b64encode(Scrypt(salt=salt, length=32, n=2**18, r=8, p=1).derive(b"pw"))
    assert json.loads(Fernet(key).decrypt((tmp_path / "s" / "secrets.enc").read_bytes())) == {"p": {"k": "value-1234"}}


def test_permissions_and_no_temporary_files_left(store):
    store.set("x", "y", "value-1234")
    assert stat.S_IMODE(os.stat(store.directory).st_mode) == 0o700
    for name in (".salt", "secrets.enc"):
        assert stat.S_IMODE(os.stat(store.directory / name).st_mode) == 0o600
    assert sorted(os.listdir(store.directory)) == [".lock", ".salt", "secrets.enc"]


def test_atomic_write_keeps_the_old_store_when_writing_fails(store, monkeypatch):
    store.set("x", "y", "old-value-1")
    before = (store.directory / "secrets.enc").read_bytes()

    def broken_fsync(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(secret_store.os, "fsync", broken_fsync)
    with pytest.raises(OSError):
        store.set("x", "y", "new-value-2")
    monkeypatch.undo()
    assert (store.directory / "secrets.enc").read_bytes() == before
    assert sorted(os.listdir(store.directory)) == [".lock", ".salt", "secrets.enc"]


def test_concurrent_sets_lose_nothing(store):
    def writer(n):
        SecretStore(store.directory, password="correct horse", scrypt_n=FAST_N).set("p", f"k{n}", f"value-{n}")

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert store.list_keys("p") == sorted(f"k{n}" for n in range(8))


def test_wrong_password_is_one_clear_error(store):
    store.set("x", "y", "value-1234")
    with pytest.raises(SecretStoreError, match="wrong password or corrupted"):
        SecretStore(store.directory, password="wrong", scrypt_n=FAST_N).get("x", "y")


def test_uninitialised_and_double_init(tmp_path, store):
    with pytest.raises(SecretStoreError, match="not initialised"):
        SecretStore(tmp_path / "nothing", password="pw", scrypt_n=FAST_N).get("a", "b")
    with pytest.raises(SecretStoreError, match="already exists"):
        store.init()
    store.set("a", "b", "value-1234")
    store.init(force=True)
    assert store.list_paths() == []


@pytest.mark.parametrize("path", ["", "a b", "../x", "a:b", "é", "a\n"])
def test_invalid_paths(store, path):
    with pytest.raises(SecretStoreError, match="invalid secret PATH"):
        store.set(path, "k", "value-1234")


@pytest.mark.parametrize("key", ["", "a/b", "a.b", "k\n", " k"])
def test_invalid_keys(store, key):
    with pytest.raises(SecretStoreError, match="invalid secret KEY"):
        store.set("p", key, "value-1234")


def test_password_from_environment_or_clear_error(monkeypatch):
    assert secret_store.password_from_env_or_tty(environ={"REACTORCIDE_SECRETS_PASSWORD": "pw"}) == "pw"
    if os.path.exists("/dev/tty"):
        try:
            open("/dev/tty", "rb").close()
            pytest.skip("a terminal is attached: the prompt would be used")
        except OSError:
            pass
    with pytest.raises(SecretStoreError, match="REACTORCIDE_SECRETS_PASSWORD"):
        secret_store.password_from_env_or_tty(environ={})


# --- ${secret:PATH:KEY} --------------------------------------------------------------------------------------


def test_resolve_refs_registers_values_before_returning(store, registry):
    password, user = new_secret("pw"), new_secret("user")
    store.set("prod/db", "password", password)
    store.set("prod/db", "user", user)
    env = {"DB_URL": "postgres://${secret:prod/db:user}:${secret:prod/db:password}@db/x", "PLAIN": "x"}
    resolved = resolve_secret_refs(env, store, registry)
    assert resolved == {"DB_URL": f"postgres://{user}:{password}@db/x", "PLAIN": "x"}
    assert env["DB_URL"].startswith("postgres://${secret:")  # the input is not modified
    assert registry.mask_text(resolved["DB_URL"]) == "postgres://***:***@db/x"


def test_resolve_without_refs_never_opens_the_store(registry):
    def no_store():
        raise AssertionError("the store was opened")

    assert resolve_secret_refs({"A": "b"}, no_store, registry) == {"A": "b"}


def test_missing_refs_one_error_naming_variable_and_reference(store, registry):
    store.set("p", "present", "value-1234")
    with pytest.raises(SecretStoreError) as info:
        resolve_secret_refs({"A": "${secret:p:present}", "B": "${secret:p:absent}", "C": "${secret:q:k}"},
                            store, registry)
    message = str(info.value)
    assert "B -> ${secret:p:absent}" in message and "C -> ${secret:q:k}" in message
    assert "value-1234" not in message


def test_malformed_ref_and_missing_store(store, registry):
    with pytest.raises(SecretStoreError, match="job env A: malformed"):
        resolve_secret_refs({"A": "${secret:bad path:k}"}, store, registry)
    with pytest.raises(SecretStoreError, match="job env A references the secret store"):
        resolve_secret_refs({"A": "${secret:p:k}"}, None, registry)
