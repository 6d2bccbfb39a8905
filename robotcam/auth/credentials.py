"""Users and tokens: the configured ones, or the admin made at first start, and their checks.

Passwords are argon2id hashes (argon2-cffi), checked in a worker thread by the caller. A name
that does not exist is checked against a dummy hash, so a failure costs the same time whether
or not the user exists. Tokens are stored as their SHA-256 only; a token is 32 random bytes, so
a plain hash is enough (nothing to brute-force) and checking costs nothing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import tempfile
from dataclasses import dataclass
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from robotcam.auth.identity import Identity, anonymous, fingerprint
from robotcam.config import AuthConfig

log = logging.getLogger(__name__)

ADMIN_FILE = "admin.json"  # in the state directory: the first-run admin's name and hash
ADMIN_NAME = "admin"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> str:
    return secrets.token_urlsafe(32)


def new_password() -> str:
    """Easy to type from a phone: 16 characters of letters and digits (~95 bits)."""
    alphabet = "abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"
    return "".join(secrets.choice(alphabet) for _ in range(16))


def state_directory(config: AuthConfig) -> Path:
    """Where robotcam keeps what it makes itself (the first-run admin, sign-in sessions):
    auth.state_directory, else systemd's $STATE_DIRECTORY (StateDirectory= in the unit), else
    /var/lib/robotcam when it exists (the installed service's), else ~/.local/state/robotcam."""
    if config.state_directory:
        return Path(config.state_directory)
    from_systemd = os.environ.get("STATE_DIRECTORY", "").split(":")[0]
    if from_systemd:
        return Path(from_systemd)
    system = Path("/var/lib/robotcam")
    if system.is_dir():
        return system
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "robotcam"


def write_private(path: Path, text: str) -> None:
    """Write atomically, readable by the owner only; keeps the folder's owner (a root shell
    resetting the password must leave the file readable to the service user)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        os.chmod(temp, 0o600)
        folder = path.parent.stat()
        if os.geteuid() == 0 and (folder.st_uid, folder.st_gid) != (0, 0):
            os.chown(temp, folder.st_uid, folder.st_gid)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def reset_admin_password(folder: Path, hasher: PasswordHasher | None = None) -> str:
    """A new random password for the first-run admin; returns it (the caller shows it once)."""
    password = new_password()
    entry = {"name": ADMIN_NAME, "password_hash": (hasher or PasswordHasher()).hash(password)}
    write_private(folder / ADMIN_FILE, json.dumps(entry) + "\n")
    return password


@dataclass(frozen=True)
class _User:
    identity: Identity
    password_hash: str


class Credentials:
    """The users and tokens of one config (rebuilt on reload); checks are pure and blocking."""

    def __init__(
        self, config: AuthConfig, generated_admin: dict[str, str] | None = None, dummy: str = "",
    ) -> None:
        self.hasher = PasswordHasher()
        self.users: dict[str, _User] = {}
        for user in config.users:
            hashed = user.password_hash.get_secret_value()
            perms = frozenset(user.permissions)
            self.users[user.name] = _User(
                Identity(user.name, "user", perms, fingerprint("user", user.name, hashed, sorted(perms))),
                hashed,
            )
        if generated_admin is not None:
            name, hashed = generated_admin["name"], generated_admin["password_hash"]
            perms = frozenset({"admin"})
            self.users[name] = _User(
                Identity(name, "user", perms, fingerprint("user", name, hashed, sorted(perms))), hashed
            )
        self.tokens: dict[str, Identity] = {
            token.sha256: Identity(
                token.name, "token", frozenset(token.permissions),
                fingerprint("token", token.name, token.sha256, sorted(token.permissions)),
            )
            for token in config.tokens
        }
        self.anonymous = anonymous(config.anonymous)
        # a hash with today's parameters, so that checking an unknown name costs the same
        self._dummy = dummy

    @staticmethod
    def make_dummy() -> str:
        """A hash of nothing anyone knows (blocking: hashing takes a moment)."""
        return PasswordHasher().hash(secrets.token_hex(16))

    def check_password(self, name: str, password: str) -> Identity | None:
        """The user's identity if the password is right, else None (blocking: run in a thread)."""
        user = self.users.get(name)
        try:
            self.hasher.verify(user.password_hash if user else self._dummy, password)
        except (VerificationError, InvalidHashError):
            return None
        return user.identity if user else None

    def check_token(self, token: str) -> Identity | None:
        try:
            digest = hash_token(token)
        except UnicodeEncodeError:  # bytes that are not UTF-8 in the header: no token of ours
            return None
        found = None
        for known, identity in self.tokens.items():  # compare every one: no early exit to time
            if secrets.compare_digest(known, digest):
                found = identity
        return found

    def current(self, identity: Identity) -> bool:
        """Is this identity (from a session or a viewer) still granted as it was?"""
        if identity.kind == "user":
            user = self.users.get(identity.name)
            return user is not None and user.identity.fingerprint == identity.fingerprint
        if identity.kind == "token":
            return any(t.fingerprint == identity.fingerprint for t in self.tokens.values())
        if identity.kind == "anonymous":
            return identity.fingerprint == self.anonymous.fingerprint
        return False  # "open" (auth off) is never current while access control is on

    def user(self, name: str) -> Identity | None:
        found = self.users.get(name)
        return found.identity if found else None


def first_run_admin(config: AuthConfig, folder: Path) -> tuple[dict[str, str] | None, str | None]:
    """With access control on and nobody configured, the admin made at first start: its entry
    and, when it was made just now, its password (to log once). Blocking: file I/O, hashing."""
    if not config.enabled or config.users or config.tokens or config.anonymous:
        return None, None
    path = folder / ADMIN_FILE
    password = None
    try:
        entry = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        password = reset_admin_password(folder)
        entry = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise OSError(f"cannot read {path}: {exc}") from None
    if not (isinstance(entry, dict) and isinstance(entry.get("name"), str)
            and str(entry.get("password_hash", "")).startswith("$argon2")):
        raise OSError(f"{path} is not what robotcam wrote: remove it, or run robotcam reset-password")
    return {"name": entry["name"], "password_hash": entry["password_hash"]}, password
