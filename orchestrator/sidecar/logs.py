"""Logging for the sidecar: structlog to stderr, JSON lines for machines, colour for people.

Why stderr: stdout belongs to commands that print results (``check``, ``graph``,
``schema``, ``bench``), so a pipe never mixes data and logs. Why JSON lines when
stderr is not a terminal: that is where a log shipper reads a sidecar, and one
event per line with stable keys (``saga``, ``correlation_id``, ``message_id``,
``state``) is what it can index. Standard-library loggers (uvicorn, broker
clients) are routed through the same renderer, so a process writes one format.

Secrets never reach a log line: every string value is scanned for URLs with
credentials and passed through :func:`adapters._util.redact_url`. Call sites
should still redact URLs themselves; this is the safety net.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from typing import Any

import orjson
import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from adapters._util import redact_url
from schemas.errors import ConfigError

__all__ = ["DRIVER_LOGGERS", "LEVELS", "configure_logging", "redact_text"]

LEVELS: dict[str, int] = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}

DRIVER_LOGGERS = ("aiormq", "aio_pika", "aiokafka", "nats", "asyncpg")
"""Broker/database client loggers, silenced below ``debug``: the adapters translate
their failures into sagawire errors that name the broker, so the drivers' own lines
would only repeat them without context (and break the one-line start-up error)."""

_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"]+")


def redact_text(text: str) -> str:
    """``text`` with the password or token of every URL in it replaced by ``***``: in
    the userinfo (``u:p@host``) or the query (``?token=...``)."""
    if "://" not in text:
        return text
    return _URL.sub(lambda m: redact_url(m.group(0)), text)


def _redact(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    for key, value in event_dict.items():
        if isinstance(value, str) and "://" in value:
            event_dict[key] = redact_text(value)
    return event_dict


class _StderrLogger:
    """Writes each rendered line to whatever ``sys.stderr`` is *now*.

    Looking the stream up per call (rather than capturing it at configure time)
    keeps logging working when a test runner swaps stderr and closes the old one.
    """

    def __init__(self, name: str = "") -> None:
        self.name = name

    def msg(self, message: str | bytes) -> None:
        line = message.decode() if isinstance(message, bytes) else message
        stream = sys.stderr
        stream.write(line + "\n")
        stream.flush()

    log = debug = info = warning = warn = error = critical = exception = fatal = msg


def _stderr_logger_factory(*args: Any) -> _StderrLogger:
    return _StderrLogger(str(args[0]) if args else "sagawire")


class _StderrHandler(logging.Handler):
    """The stdlib half of the same idea: format with structlog, write to current stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
            stream = sys.stderr
            stream.write(line + "\n")
            stream.flush()
        except Exception:
            self.handleError(record)


_HEAD = ("timestamp", "level", "logger", "event")


def _head_first(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """Put the keys a reader scans for first, so JSON lines stay readable raw."""
    head = {k: event_dict.pop(k) for k in _HEAD if k in event_dict}
    head.update(event_dict)
    return head


def _orjson_dumps(obj: Any, **kwargs: Any) -> str:
    return orjson.dumps(obj, default=kwargs.get("default")).decode()


def _resolve_level(level: str | None) -> int:
    name = (level or os.environ.get("SAGAWIRE_LOG_LEVEL") or "info").strip().lower()
    if name == "warn":
        name = "warning"
    if name not in LEVELS:
        raise ConfigError(f"unknown log level {name!r}; use one of {', '.join(LEVELS)}")
    return LEVELS[name]


def configure_logging(level: str | None = None, json: bool | None = None) -> None:
    """Configure structlog and the stdlib root logger; safe to call more than once.

    ``level`` falls back to ``SAGAWIRE_LOG_LEVEL``, then ``info``. ``json`` None
    means: JSON lines unless stderr is a terminal.
    """
    numeric = _resolve_level(level)
    if json is None:
        json = not sys.stderr.isatty()
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    # Tracebacks become plain text *before* redaction (and never carry locals).
    tail: list[Processor] = [structlog.processors.format_exc_info, _redact]
    renderer: Processor
    if json:
        tail.append(_head_first)
        renderer = structlog.processors.JSONRenderer(serializer=_orjson_dumps)
    else:
        renderer = structlog.dev.ConsoleRenderer(
            colors=sys.stderr.isatty(), exception_formatter=structlog.dev.plain_traceback
        )
    structlog.configure(
        processors=[*shared, structlog.processors.StackInfoRenderer(), *tail, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=_stderr_logger_factory,
        context_class=dict,
        cache_logger_on_first_use=False,
    )
    _route_stdlib(numeric, shared, [*tail, renderer])


def _route_stdlib(numeric: int, pre_chain: list[Processor], tail: list[Processor]) -> None:
    """Send stdlib records (uvicorn, broker clients) through the same processors."""
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=pre_chain,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *tail],
    )
    root = logging.getLogger()
    for old in list(root.handlers):
        if isinstance(old, _StderrHandler):
            root.removeHandler(old)
    handler = _StderrHandler()
    handler.setFormatter(formatter)
    root.addHandler(handler)
    root.setLevel(numeric)
    for name in DRIVER_LOGGERS:
        logging.getLogger(name).setLevel(numeric if numeric <= logging.DEBUG else logging.CRITICAL)
