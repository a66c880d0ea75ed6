"""Who may call the admin API: bearer tokens, compared in constant time.

``SAGAWIRE_ADMIN_TOKEN`` guards every route that changes something (actions, bulk
actions, redrives, ``POST /events``); with it or ``SAGAWIRE_READ_TOKEN`` set, every
read route wants a token too (either one reads). ``/healthz`` and ``/readyz`` stay open:
a kubelet or a load balancer probes them with no secret. With no token at all the API
is open, which is why the sidecar binds 127.0.0.1 unless told otherwise.

A token setting is one secret (its name, recorded in an instance's history as who
acted, is ``admin`` or ``read``), or several named ones, ``alice=s3cret,bob=0ther``,
so that the history says which operator it was.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from pydantic import SecretStr
from starlette.requests import Request

__all__ = ["Denied", "Tokens"]


class Denied(Exception):
    """401 (no or unknown token) or 403 (a read token on a mutating route)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def _named(setting: SecretStr | None, default_name: str) -> list[tuple[str, bytes]]:
    if setting is None:
        return []
    text = setting.get_secret_value().strip()
    pairs = [p.strip() for p in text.split(",")] if "=" in text else [text]
    out = []
    for pair in pairs:
        name, sep, secret = pair.partition("=")
        if not sep:
            name, secret = default_name, pair
        out.append((name.strip() or default_name, secret.strip().encode()))
    return out


@dataclass(frozen=True)
class Tokens:
    """The configured tokens; :meth:`who` says whose a request carries."""

    admin: tuple[tuple[str, bytes], ...] = ()
    read: tuple[tuple[str, bytes], ...] = ()

    @classmethod
    def from_settings(cls, admin: SecretStr | None, read: SecretStr | None) -> Tokens:
        return cls(tuple(_named(admin, "admin")), tuple(_named(read, "read")))

    @property
    def reads_open(self) -> bool:
        return not self.admin and not self.read

    def who(self, request: Request, *, write: bool) -> str:
        """The name of the token the request carries, allowed for a ``write`` or a read;
        raises :class:`Denied` otherwise. Open routes answer ``"anonymous"``."""
        if self.reads_open:  # no token at all: the API is open (and bound to 127.0.0.1)
            return "anonymous"
        if write and not self.admin:  # a read token alone must not leave writes open
            raise Denied(403, "only a read token is configured: set SAGAWIRE_ADMIN_TOKEN to act")
        header = request.headers.get("authorization", "")
        scheme, _, presented = header.partition(" ")
        if scheme.lower() != "bearer" or not presented.strip():
            raise Denied(401, "this route needs a token: Authorization: Bearer <token>")
        given = presented.strip().encode()
        found = None
        for name, secret in self.admin:  # every token compared, so timing tells nothing
            if hmac.compare_digest(given, secret):
                found = found or name
        if found is not None:
            return found
        for name, secret in self.read:
            if hmac.compare_digest(given, secret):
                found = found or name
        if found is None:
            raise Denied(401, "unknown token")
        if write:
            raise Denied(403, f"token {found!r} may read, not change: use an admin token")
        return found
