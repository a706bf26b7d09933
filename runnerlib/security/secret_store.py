"""The encrypted local secret store, and `${secret:PATH:KEY}` references in job env.

Format (the worker contract; stores written by the previous runner library open unchanged):

- a directory, by default `$XDG_CONFIG_HOME/reactorcide/secrets` (`~/.config/...`), mode 0700;
- `.salt`: 32 random bytes, written once at `init`;
- `secrets.enc`: one Fernet token whose plaintext is the UTF-8 JSON `{"PATH": {"KEY": "value", ...}, ...}`;
- the Fernet key is `urlsafe_b64encode(scrypt(password, salt, n=2**18, r=8, p=1, length=32))`;
- PATH matches `^[a-zA-Z0-9/_-]+$`, KEY matches `^[a-zA-Z0-9_-]+$`.

Every write goes to a temporary file in the same directory (0600, fsync) that then replaces the old one
atomically, under an exclusive lock so two concurrent `set`s cannot lose each other's entry. scrypt at the
contract's cost takes ~0.5 s and 256 MiB; the key is derived once per SecretStore object. Tests may pass a
lower `scrypt_n`; a store written that way only opens with the same `scrypt_n`.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import getpass
import json
import os
import re
import tempfile
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from cryptography.fernet import Fernet

SCRYPT_N = 2**18
SCRYPT_R = 8
SCRYPT_P = 1
SALT_BYTES = 32
SALT_FILE = ".salt"
DATA_FILE = "secrets.enc"
LOCK_FILE = ".lock"
PASSWORD_VAR = "REACTORCIDE_SECRETS_PASSWORD"
STORE_VAR = "REACTORCIDE_SECRETS_STORE"

PATH_RE = re.compile(r"[a-zA-Z0-9/_-]+")  # used with fullmatch: "$" would accept a trailing newline
KEY_RE = re.compile(r"[a-zA-Z0-9_-]+")
# `${secret:PATH:KEY}`; a `${secret:` that does not continue like this is an error, not literal text.
REF_RE = re.compile(r"\$\{secret:([a-zA-Z0-9/_-]+):([a-zA-Z0-9_-]+)\}")
REF_START = "${secret:"


class SecretStoreError(Exception):
    """Any failure of the store: names the store, path, key or rule; never a value or the password."""


class Registry(Protocol):
    def add(self, value: str | bytes, *, source: str) -> bool: ...


def default_store_dir(environ: Mapping[str, str] | None = None) -> Path:
    """REACTORCIDE_SECRETS_STORE, else $XDG_CONFIG_HOME/reactorcide/secrets (~/.config/reactorcide/secrets)."""
    env = os.environ if environ is None else environ
    if env.get(STORE_VAR):
        return Path(env[STORE_VAR])
    config = env.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(config) / "reactorcide" / "secrets"


def check_path(path: str) -> str:
    """Raise SecretStoreError unless `path` matches ^[a-zA-Z0-9/_-]+$."""
    if not isinstance(path, str) or not PATH_RE.fullmatch(path):
        raise SecretStoreError(f"invalid secret PATH {path!r}: use letters, digits, '/', '_' and '-' only")
    return path


def check_key(key: str) -> str:
    """Raise SecretStoreError unless `key` matches ^[a-zA-Z0-9_-]+$."""
    if not isinstance(key, str) or not KEY_RE.fullmatch(key):
        raise SecretStoreError(f"invalid secret KEY {key!r}: use letters, digits, '_' and '-' only")
    return key


def password_from_env_or_tty(*, confirm: bool = False, environ: Mapping[str, str] | None = None) -> str:
    """The store password: REACTORCIDE_SECRETS_PASSWORD, else a hidden prompt on the terminal (/dev/tty).

    The prompt uses the terminal rather than stdin because stdin may carry the value being stored.
    """
    env = os.environ if environ is None else environ
    if env.get(PASSWORD_VAR):
        return env[PASSWORD_VAR]
    try:
        with open("/dev/tty", "r+b", buffering=0):
            pass
    except OSError:
        raise SecretStoreError(
            f"no store password: set {PASSWORD_VAR} or run on a terminal to be prompted"
        ) from None
    password = getpass.getpass("Secret store password: ")
    if confirm and getpass.getpass("Repeat the password: ") != password:
        raise SecretStoreError("the two passwords differ")
    if not password:
        raise SecretStoreError("the store password must not be empty")
    return password


def _atomic_write(directory: Path, name: str, data: bytes) -> None:
    """Write `directory/name` so that readers see the old or the new content, never a mix; mode 0600."""
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=directory)  # mkstemp: 0600, O_EXCL
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, directory / name)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class SecretStore:
    """An encrypted store of `PATH -> KEY -> value` in one directory.

    `password` may be a string or a callable returning one (called at most once, when the key is first needed).
    `scrypt_n` is the scrypt cost; keep the default (the contract's 2**18) except in tests.

    Example::

        store = SecretStore("/tmp/store", password="pw")
        store.init()
        store.set("prod/db", "password", "hunter2-long")
        store.get("prod/db", "password")          # -> "hunter2-long"
    """

    def __init__(
        self,
        directory: str | os.PathLike[str] | None = None,
        *,
        password: str | Callable[[], str] | None = None,
        scrypt_n: int | None = None,
    ) -> None:
        self.directory = Path(directory) if directory is not None else default_store_dir()
        self._password = password if password is not None else password_from_env_or_tty
        self.scrypt_n = scrypt_n or SCRYPT_N
        self._fernet: Fernet | None = None

    def __repr__(self) -> str:  # never the password
        return f"SecretStore({str(self.directory)!r})"

    # --- files -------------------------------------------------------------------------------------------

    @property
    def data_path(self) -> Path:
        return self.directory / DATA_FILE

    @property
    def salt_path(self) -> Path:
        return self.directory / SALT_FILE

    def exists(self) -> bool:
        """True once `init` has run (the encrypted file exists)."""
        return self.data_path.exists()

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        fd = os.open(self.directory / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _key(self) -> Fernet:
        if self._fernet is None:
            try:
                salt = self.salt_path.read_bytes()
            except FileNotFoundError:
                raise SecretStoreError(
                    f"secret store {self.directory} is not initialised (run `runnerlib store init`)"
                ) from None
            if len(salt) != SALT_BYTES:
                raise SecretStoreError(f"secret store {self.directory}: {SALT_FILE} is not {SALT_BYTES} bytes")
            # Imported here: every job scans its env for references, few open a store (cryptography is ~10 ms).
            from cryptography.fernet import Fernet
            from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

            password = self._password() if callable(self._password) else self._password
            kdf = Scrypt(salt=salt, length=32, n=self.scrypt_n, r=SCRYPT_R, p=SCRYPT_P)
            self._fernet = Fernet(base64.urlsafe_b64encode(kdf.derive(password.encode("utf-8"))))
        return self._fernet

    def _load(self) -> dict[str, dict[str, str]]:
        try:
            token = self.data_path.read_bytes()
        except FileNotFoundError:
            raise SecretStoreError(
                f"secret store {self.directory} is not initialised (run `runnerlib store init`)"
            ) from None
        from cryptography.fernet import InvalidToken

        try:
            plain = self._key().decrypt(token)
        except InvalidToken:
            raise SecretStoreError(f"secret store {self.directory}: wrong password or corrupted store") from None
        try:
            data = json.loads(plain.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise SecretStoreError(f"secret store {self.directory}: decrypted content is not JSON") from None
        if not isinstance(data, dict) or not all(
            isinstance(v, dict) and all(isinstance(x, str) for x in v.values()) for v in data.values()
        ):
            raise SecretStoreError(f"secret store {self.directory}: expected {{PATH: {{KEY: value}}}}")
        return data

    def _save(self, data: Mapping[str, Mapping[str, str]]) -> None:
        token = self._key().encrypt(json.dumps(data, indent=2, sort_keys=True).encode("utf-8"))
        _atomic_write(self.directory, DATA_FILE, token)

    # --- public operations -------------------------------------------------------------------------------

    def init(self, *, force: bool = False) -> None:
        """Create the directory (0700), a fresh salt and an empty encrypted store.

        Refuses an existing store unless `force` (which discards every entry: a new salt means a new key).
        """
        if self.exists() and not force:
            raise SecretStoreError(f"secret store {self.directory} already exists (use --force to replace it)")
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.directory, 0o700)
        with self._locked():
            # The old data first: a crash between the two writes then leaves "not initialised", never old data
            # under a new salt (which reads as "wrong password").
            with contextlib.suppress(FileNotFoundError):
                self.data_path.unlink()
            _atomic_write(self.directory, SALT_FILE, os.urandom(SALT_BYTES))
            self._fernet = None
            self._save({})

    def get(self, path: str, key: str) -> str | None:
        """The value at PATH/KEY, or None."""
        check_path(path)
        check_key(key)
        return self._load().get(path, {}).get(key)

    def set(self, path: str, key: str, value: str) -> None:
        """Store `value` at PATH/KEY (replacing any old value)."""
        check_path(path)
        check_key(key)
        if not isinstance(value, str):
            raise SecretStoreError(f"value for {path}:{key} must be a string")
        with self._locked():
            data = self._load()
            data.setdefault(path, {})[key] = value
            self._save(data)

    def delete(self, path: str, key: str) -> bool:
        """Remove PATH/KEY; True if it existed. An emptied PATH disappears."""
        check_path(path)
        check_key(key)
        with self._locked():
            data = self._load()
            if key not in data.get(path, {}):
                return False
            del data[path][key]
            if not data[path]:
                del data[path]
            self._save(data)
            return True

    def list_paths(self) -> list[str]:
        """Every PATH that holds at least one key, sorted."""
        return sorted(self._load())

    def list_keys(self, path: str) -> list[str]:
        """The KEYs under PATH (never values), sorted."""
        check_path(path)
        return sorted(self._load().get(path, {}))

    def snapshot(self) -> dict[str, dict[str, str]]:
        """Every entry, decrypted once (for resolving many references with one decryption)."""
        return self._load()


def find_secret_refs(env: Mapping[str, str]) -> dict[str, list[tuple[str, str]]]:
    """The `${secret:PATH:KEY}` references of each variable; a malformed `${secret:` raises SecretStoreError."""
    found: dict[str, list[tuple[str, str]]] = {}
    for name, value in env.items():
        if not isinstance(value, str) or REF_START not in value:
            continue
        refs = [(m.group(1), m.group(2)) for m in REF_RE.finditer(value)]
        if value.count(REF_START) != len(refs):
            raise SecretStoreError(
                f"job env {name}: malformed secret reference; expected ${{secret:PATH:KEY}} with PATH "
                "[a-zA-Z0-9/_-]+ and KEY [a-zA-Z0-9_-]+"
            )
        found[name] = refs
    return found


def resolve_secret_refs(
    env: MutableMapping[str, str] | Mapping[str, str],
    store: SecretStore | Callable[[], SecretStore] | None,
    registry: Registry,
) -> dict[str, str]:
    """Return a copy of `env` with every `${secret:PATH:KEY}` replaced by its value from `store`.

    Every resolved value is added to `registry` (source `secret store PATH:KEY`) before this returns. The
    store is opened (and the password asked for) only if some reference exists; `store` may be a callable
    that builds it lazily. All missing references are reported in one error naming each variable and
    reference; nothing is resolved in that case.

    Example::

        env = resolve_secret_refs({"DB": "${secret:prod/db:password}"}, SecretStore(), registry)
    """
    refs = find_secret_refs(env)
    resolved = dict(env)
    if not refs:
        return resolved
    if store is None:
        first = next(iter(refs))
        raise SecretStoreError(f"job env {first} references the secret store, but no store is configured")
    if callable(store) and not isinstance(store, SecretStore):
        store = store()
    entries = store.snapshot()
    missing = [
        f"{name} -> ${{secret:{path}:{key}}}"
        for name, pairs in refs.items()
        for path, key in pairs
        if key not in entries.get(path, {})
    ]
    if missing:
        raise SecretStoreError(f"secret store {store.directory} has no entry for: {'; '.join(missing)}")
    for name, pairs in refs.items():
        for path, key in pairs:
            registry.add(entries[path][key], source=f"secret store {path}:{key}")
        resolved[name] = REF_RE.sub(lambda m: entries[m.group(1)][m.group(2)], env[name])
    return resolved
