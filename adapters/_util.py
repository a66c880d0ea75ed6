"""Small helpers every broker adapter shares: secret-free URLs, checked URL options,
reconnect backoff, and retrieving the outcome of a future nobody will await."""

from __future__ import annotations

import asyncio
import difflib
import random
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit, urlunsplit

from schemas.errors import ConfigError

__all__ = ["Backoff", "check_options", "query_params", "redact_url", "retrieve_outcome"]


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
    """``url`` with any password or token (userinfo or query) replaced by ``***``.

    Works on multi-host URLs (``kafka://u:p@h1:9092,h2:9092``) too: the netloc is
    split by hand, never parsed as one host and port. A URL too malformed to split
    (``nats://[::1``) is shown as its scheme alone: this is what error messages print."""
    try:
        parts = urlsplit(url)
    except ValueError:
        scheme, sep, _ = url.partition("://")
        return f"{scheme}://***" if sep else "***"
    query = _redact_query(parts.query)
    netloc = parts.netloc
    userinfo, at, hosts = netloc.rpartition("@")
    if at:
        user, colon, _password = userinfo.partition(":")
        netloc = f"{user}:***@{hosts}" if colon else f"***@{hosts}"
    if netloc == parts.netloc and query == parts.query:
        return url
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def query_params(url: str) -> dict[str, str]:
    """The URL's query string as a flat dict (last value wins)."""
    return {k: v[-1] for k, v in parse_qs(urlsplit(url).query).items()}


def check_options(url: str, accepted: Collection[str], display: str) -> None:
    """ConfigError naming every query option of ``url`` not in ``accepted``.

    Why every broker refuses what it does not know: a misspelt option (``?stram=ORDERS``)
    otherwise falls back to its default without a word, and the sidecar runs against
    the wrong stream. ``display`` is the URL as errors may show it (no secrets). An
    option given with no value (``?stram=``) counts too: it is still a misspelling."""
    names = parse_qs(urlsplit(url).query, keep_blank_values=True)
    unknown = [name for name in names if name not in accepted]
    if not unknown:
        return
    hints = []
    for name in unknown:
        close = difflib.get_close_matches(name, accepted, n=1)
        hints.append(f"{name!r} (did you mean {close[0]!r}?)" if close else repr(name))
    raise ConfigError(
        f"unknown option{'s' if len(unknown) > 1 else ''} {', '.join(hints)} in {display};"
        f" accepted: {', '.join(sorted(accepted))}"
    )


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


def retrieve_outcome(future: asyncio.Future[Any]) -> None:
    """A done callback for a future whose caller has gone (a failed or cancelled
    publish): read its error, so asyncio does not log "exception was never retrieved"."""
    if not future.cancelled():
        future.exception()
