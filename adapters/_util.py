"""Small helpers every broker adapter shares: secret-free URLs, reconnect backoff."""

from __future__ import annotations

import random
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit, urlunsplit

__all__ = ["Backoff", "query_params", "redact_url"]


_SECRET_PARAMS = ("password", "token", "secret", "sasl_password", "nkey", "key")


def _redact_query(query: str) -> str:
    if not query:
        return query
    out = []
    for pair in query.split("&"):
        name, sep, _value = pair.partition("=")
        if sep and any(s in name.lower() for s in _SECRET_PARAMS):
            out.append(f"{name}=***")
        else:
            out.append(pair)
    return "&".join(out)


def redact_url(url: str) -> str:
    """``url`` with any password or token (userinfo or query) replaced by ``***``."""
    parts = urlsplit(url)
    query = _redact_query(parts.query)
    if parts.password is None and parts.username is None:
        if query == parts.query:
            return url
        return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    user = parts.username or ""
    userinfo = f"{user}:***@" if parts.password is not None else "***@"
    return urlunsplit((parts.scheme, userinfo + host, parts.path, query, parts.fragment))


def query_params(url: str) -> dict[str, str]:
    """The URL's query string as a flat dict (last value wins)."""
    return {k: v[-1] for k, v in parse_qs(urlsplit(url).query).items()}


@dataclass
class Backoff:
    """Exponential backoff with full jitter, for reconnect loops."""

    initial: float = 0.1
    maximum: float = 5.0
    multiplier: float = 2.0
    attempt: int = 0

    def next_delay(self) -> float:
        ceiling = min(self.maximum, self.initial * self.multiplier**self.attempt)
        self.attempt += 1
        return random.uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        self.attempt = 0
