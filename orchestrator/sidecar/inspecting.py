"""One saga instance, read from a store and shown in the terminal (``sagawire inspect``).

What an on-call engineer asks first about one order: where is it, since when, what
did it receive and send to get there, and what is waiting. This reads the instance,
its history and its parked messages through the store's own classes (so every store
the sidecar runs on can be read), writes nothing, and shows times in ISO 8601 (UTC).
A store URL that names no database is refused before anything is opened, so a typo
never creates an empty SQLite file.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import orjson
from pydantic import ValidationError
from rich.console import Console, Group
from rich.json import JSON
from rich.panel import Panel
from rich.table import Table

from adapters._util import redact_url
from orchestrator.language.definition import SagaDefinition
from orchestrator.language.statedata import state_from_json
from orchestrator.language.status import Meta
from orchestrator.store import HistoryRecord, InstanceRecord, ParkedRecord, open_store
from schemas.errors import ConfigError

__all__ = ["Snapshot", "iso", "read_snapshot", "render"]

STATUS_STYLE = {
    "running": "cyan",
    "completed": "green",
    "compensated": "yellow",
    "compensation_failed": "bold red",
    "aborted": "magenta",
}


def iso(seconds: float) -> str:
    """UNIX seconds as ISO 8601 in UTC, to the millisecond."""
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds")


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything the store holds about one instance."""

    instance: InstanceRecord
    history: list[HistoryRecord]
    parked: list[ParkedRecord]

    @property
    def meta(self) -> Meta:
        return Meta.from_json(orjson.loads(self.instance.meta))


def _refuse_empty(url: str) -> None:
    """A store URL that would create a database rather than read one is an error."""
    parts = urlsplit(url)
    if parts.scheme == "memory":
        raise ConfigError(
            "--store memory:// holds nothing outside the process that wrote it; give the"
            " sidecar's store URL (sqlite:///file.db or postgresql://...)"
        )
    if parts.scheme == "sqlite":
        path = parts.path[1:] if parts.path.startswith("/") else parts.path
        if path in ("", ":memory:"):
            raise ConfigError(f"--store {url!r} names no database file")
        if not Path(path).is_file():
            raise ConfigError(f"--store {url!r}: no SQLite database at {path} (nothing to inspect)")


async def read_snapshot(url: str, saga: str, correlation_id: str) -> Snapshot:
    """The instance ``(saga, correlation_id)`` in the store at ``url``; ConfigError
    (one line) if the store or the instance is not there."""
    _refuse_empty(url)
    store = open_store(url)
    await store.open()
    try:
        key = (saga, correlation_id)
        found = await store.load([key])
        record = found.get(key)
        if record is None:
            raise ConfigError(
                f"no instance {correlation_id!r} of saga {saga!r} in store {redact_url(url)}"
            )
        return Snapshot(record, await store.history(key), await store.parked([key]))
    finally:
        await store.close()


def render(snap: Snapshot, console: Console, saga: SagaDefinition | None = None) -> None:
    """Show ``snap``: a summary, the state's data, the history, what is parked."""
    inst, meta = snap.instance, snap.meta
    summary = Table.grid(padding=(0, 2))
    summary.add_column(style="bold")
    summary.add_column()
    style = STATUS_STYLE.get(inst.status, "")
    summary.add_row("state", inst.state)
    summary.add_row("status", f"[{style}]{inst.status}[/]" if style else inst.status)
    summary.add_row("version", str(inst.version))
    summary.add_row("created", iso(inst.created_at))
    summary.add_row("updated", iso(inst.updated_at))
    if meta.failure:
        summary.add_row("failure", meta.failure)
    if meta.attempts:
        summary.add_row("attempts", ", ".join(f"{k}: {v}" for k, v in meta.attempts.items()))
    if meta.steps:
        summary.add_row("steps", ", ".join(f"{k}: {v}" for k, v in meta.steps.items()))
    if meta.timers:
        summary.add_row("timers set", ", ".join(meta.timers))
    parts: list[Table | JSON | str] = [summary, JSON(inst.data.decode() or "null")]
    if saga is not None:
        try:
            state_from_json(saga.state_model, inst.data)
        except ValidationError as exc:
            parts.append(
                f"[bold red]the stored state does not load as {saga.state_model.__name__}:"
                f" {' '.join(str(exc).split())}[/]"
            )
    title = f"saga {inst.saga!r}, instance {inst.correlation_id!r}"
    console.print(Panel(Group(*parts), title=title, title_align="left"))
    console.print(_history(snap.history))
    if snap.parked:
        console.print(_parked(snap.parked))


def _history(rows: list[HistoryRecord]) -> Table:
    table = Table(title=f"history ({len(rows)} entries)", title_justify="left")
    for column in ("seq", "at", "message", "from -> to", "sent", "note"):
        table.add_column(column, overflow="fold")
    for h in rows:
        sent = "\n".join(c.partition(":")[0] for c in h.commands)
        table.add_row(
            str(h.seq),
            iso(h.at),
            f"{h.message_type}\n[dim]{h.message_id}[/]",
            f"{h.from_state} -> {h.to_state}",
            sent,
            h.note,
        )
    return table


def _parked(rows: list[ParkedRecord]) -> Table:
    table = Table(title=f"parked ({len(rows)} messages)", title_justify="left")
    for column in ("message id", "type", "parked at", "expires", "reason"):
        table.add_column(column, overflow="fold")
    for p in rows:
        table.add_row(p.message_id, p.destination, iso(p.parked_at), iso(p.expires), p.reason)
    return table
