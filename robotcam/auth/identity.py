"""Who a request or a viewer is, and what they may do."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Iterable, Literal

PERMISSIONS = ("view", "talk", "control", "metrics", "admin")

Kind = Literal["user", "token", "anonymous", "open"]


@dataclass(frozen=True)
class Identity:
    """`fingerprint` changes whenever the config entry behind it changes (password, token,
    permissions): a reload compares it to revoke sessions and viewers that lost their grant."""

    name: str
    kind: Kind
    permissions: frozenset[str]
    fingerprint: str
    #: SHA-256 of the sign-in session that made the request (users only): logout ends its viewers
    login: str | None = None

    def allows(self, permission: str) -> bool:
        return "admin" in self.permissions or permission in self.permissions

    @property
    def label(self) -> str:
        """For log lines: 'user alice', 'token obs', 'anonymous'."""
        return self.name if self.kind in ("anonymous", "open") else f"{self.kind} {self.name}"

    def public(self) -> dict[str, object]:
        """What GET /api/session tells the page (and the API user) about itself."""
        granted = PERMISSIONS if "admin" in self.permissions else [
            p for p in PERMISSIONS if p in self.permissions
        ]
        return {"name": self.name, "kind": self.kind, "permissions": list(granted)}


def fingerprint(*parts: object) -> str:
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:16]


def anonymous(permissions: Iterable[str]) -> Identity:
    granted = frozenset(permissions)
    return Identity("anonymous", "anonymous", granted, fingerprint("anonymous", sorted(granted)))


#: Everyone, when access control is off (auth.enabled: false): every permission.
OPEN = Identity("anyone", "open", frozenset(PERMISSIONS), fingerprint("open"))
