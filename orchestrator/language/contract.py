"""The sagas' wire contract as documents: JSON Schemas and one AsyncAPI 3.0 document.

What a service team needs to talk to sagawire without reading Python:

* a JSON Schema (draft 2020-12) of each message's ``data``, from its pydantic model:
  the events the sagas consume as sagawire validates them, the commands and outcome
  events they send as sagawire writes them (:func:`payload_schemas`);
* the envelope every message travels in (:func:`schemas.codec.envelope_json_schema`);
* an AsyncAPI 3.0 document (:func:`asyncapi`) with, for each broker, a channel per
  message type at its real address (Kafka topic, NATS subject, RabbitMQ exchange and
  routing key), what sagawire does on it (``receive`` what it consumes, ``send`` what it
  emits) and the message: a structured CloudEvent whose ``type`` is the message type and
  whose ``data`` is the payload model, correlated by its ``correlationid`` attribute.

How a broker maps a message type to an address belongs to its adapter; the caller hands
it in as a :class:`Server` (the sidecar builds them from broker URLs), so this module
stays in the language layer and imports no adapter.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from orchestrator.language.definition import ModelType, SagaDefinition, SendSpec
from schemas.codec import envelope_json_schema
from schemas.envelope import CONTENT_TYPE
from schemas.errors import DefinitionError

__all__ = ["DRAFT", "Message", "Server", "asyncapi", "messages", "payload_schemas"]

DRAFT = "https://json-schema.org/draft/2020-12/schema"
ENVELOPE = "CloudEvent"
"""The envelope's name among the AsyncAPI document's component schemas."""

Bindings = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Message:
    """One message type on the wire, with the model of its ``data`` and who uses it."""

    type: str
    model: ModelType | None
    consumed_by: tuple[str, ...] = ()
    sent_by: tuple[str, ...] = ()
    plain: bool = False
    """Some saga also reads it as a bare JSON body (``Event(..., plain=...)``)."""

    @property
    def mode(self) -> JsonSchemaMode:
        """``validation`` for what sagawire reads (what it accepts), ``serialization``
        for what only it writes (what it produces)."""
        return "validation" if self.consumed_by else "serialization"


def _no_bindings(*_: str) -> Bindings:
    return {}


@dataclass(frozen=True, slots=True)
class Server:
    """A broker as the AsyncAPI document shows it: where it is, and how its adapter
    names the channel of a message type and describes it (each binding callable
    returns the protocol's binding object, or nothing)."""

    id: str
    protocol: str
    host: str
    address: Callable[[str], str]
    pathname: str | None = None
    description: str = ""
    channel_bindings: Callable[[str], Bindings] = field(default=_no_bindings)
    operation_bindings: Callable[[str, str], Bindings] = field(default=_no_bindings)
    """Called with the action (``send`` or ``receive``) and the message type."""
    message_bindings: Callable[[str], Bindings] = field(default=_no_bindings)


def _sent_models(saga: SagaDefinition) -> list[tuple[str, ModelType | None]]:
    specs: list[SendSpec] = []
    if saga.flow is not None:
        flow = saga.flow
        specs += [s.send for s in flow.steps if s.send is not None]
        specs += [s.compensate for s in flow.steps if s.compensate is not None]
        ends = (flow.on_completed, flow.on_compensated, flow.on_compensation_failed)
        specs += [s for s in ends if s is not None]
    for rows in saga.transitions.values():
        specs += [a for t in rows for a in t.actions if isinstance(a, SendSpec)]
    return [(s.type, s.model) for s in specs]


def _same(a: ModelType, b: ModelType) -> bool:
    """Whether two models give one shape on the wire: the same class, or classes alike
    (one module loaded twice, by path and by name, gives two classes of each model)."""
    if a is b:
        return True
    return all(a.model_json_schema(mode=m) == b.model_json_schema(mode=m) for m in _MODES)


_MODES: tuple[JsonSchemaMode, ...] = ("validation", "serialization")


def messages(sagas: Sequence[SagaDefinition]) -> list[Message]:
    """Every message type the sagas consume or send, in the order first met. Two sagas
    may share a type only with one payload model: a type has one shape on the wire."""
    found: dict[str, Message] = {}
    owner: dict[str, str] = {}

    def add(type: str, model: ModelType | None, saga: str, *, consumed: bool, plain: bool) -> None:
        old = found.get(type)
        if old is None:
            found[type] = Message(
                type, model, (saga,) if consumed else (), () if consumed else (saga,), plain
            )
            owner[type] = saga
            return
        if model is not None and old.model is not None and not _same(model, old.model):
            raise DefinitionError(
                f"message type {type!r} has two payload models: {old.model.__name__} (saga"
                f" {owner[type]!r}) and {model.__name__} (saga {saga!r}); a type has one"
                " shape on the wire, so share one model"
            )
        found[type] = Message(
            type,
            old.model or model,
            old.consumed_by + ((saga,) if consumed and saga not in old.consumed_by else ()),
            old.sent_by + ((saga,) if not consumed and saga not in old.sent_by else ()),
            old.plain or plain,
        )

    for saga in sagas:
        for spec in saga.events.values():
            add(spec.type, spec.model, saga.name, consumed=True, plain=spec.plain is not None)
        for type, model in _sent_models(saga):
            add(type, model, saga.name, consumed=False, plain=False)
    return list(found.values())


def _any(type: str) -> dict[str, Any]:
    return {"title": type, "description": "No payload model is declared: any JSON value."}


def payload_schemas(sagas: Sequence[SagaDefinition]) -> dict[str, dict[str, Any]]:
    """A standalone JSON Schema of each message type's ``data``, by message type."""
    out: dict[str, dict[str, Any]] = {}
    for m in messages(sagas):
        schema = m.model.model_json_schema(mode=m.mode) if m.model else _any(m.type)
        out[m.type] = {"$schema": DRAFT, **schema}
    return out


def _who(m: Message) -> str:
    parts = []
    if m.consumed_by:
        parts.append("consumed by saga " + ", ".join(m.consumed_by))
    if m.sent_by:
        parts.append("sent by saga " + ", ".join(m.sent_by))
    return "; ".join(parts)


def _component_schemas(found: Sequence[Message]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The payload models as AsyncAPI component schemas (one namespace: pydantic names
    two models of one name apart), and each message type's reference to its own."""
    ref = "#/components/schemas/{model}"
    pairs: list[tuple[type[BaseModel], JsonSchemaMode]] = [
        (m.model, m.mode) for m in found if m.model is not None
    ]
    keys, top = models_json_schema(pairs, ref_template=ref)
    defs: dict[str, Any] = dict(top.get("$defs", {}))
    data = {m.type: keys[(m.model, m.mode)] if m.model is not None else _any(m.type) for m in found}
    envelope = envelope_json_schema()
    envelope.pop("$schema", None)  # a component is AsyncAPI's Schema Object (draft 07+)
    defs[ENVELOPE] = envelope
    return defs, data


def _message(m: Message, data: dict[str, Any], servers: Sequence[Server]) -> dict[str, Any]:
    structured = {
        "allOf": [
            {"$ref": f"#/components/schemas/{ENVELOPE}"},
            {
                "type": "object",
                "required": ["type", "data"] if m.model is not None else ["type"],
                "properties": {"type": {"const": m.type}, "data": data},
            },
        ]
    }
    description = (
        f"A CloudEvent of type `{m.type}` ({_who(m)}). Shown here in structured mode (the"
        " CloudEvent as the JSON body); in binary mode the body is the `data` alone and"
        " the attributes travel as `ce_`/`ce-`/`cloudEvents_` headers, and sagawire reads"
        " both."
    )
    if m.plain:
        description += " It is also read as a bare JSON body (the `data` alone, no attributes)."
    bindings: Bindings = {}
    for s in servers:
        bindings.update(s.message_bindings(m.type))
    out: dict[str, Any] = {
        "name": m.type,
        "title": m.type,
        "summary": _who(m),
        "description": description,
        "contentType": CONTENT_TYPE,
        "payload": {"oneOf": [structured, data]} if m.plain else structured,
        "correlationId": {
            "description": "The saga instance: every message of one instance carries it.",
            "location": "$message.payload#/correlationid",
        },
    }
    if bindings:
        out["bindings"] = bindings
    return out


def asyncapi(
    sagas: Sequence[SagaDefinition],
    servers: Sequence[Server],
    *,
    title: str = "",
    version: str = "1.0.0",
) -> dict[str, Any]:
    """The AsyncAPI 3.0 document of ``sagas`` on ``servers`` (see the module docs)."""
    found = messages(sagas)
    schemas, data = _component_schemas(found)
    names = ", ".join(s.name for s in sagas)
    doc: dict[str, Any] = {
        "asyncapi": "3.0.0",
        "info": {
            "title": title or f"sagawire: {names}",
            "version": version,
            "description": (
                f"What the sagas {names} consume and send, as sagawire runs them: every"
                " message is a CloudEvent; each channel is one message type on one broker."
            ),
        },
        "defaultContentType": CONTENT_TYPE,
        "servers": {},
        "channels": {},
        "operations": {},
        "components": {
            "schemas": schemas,
            "messages": {m.type: _message(m, data[m.type], servers) for m in found},
        },
    }
    for s in servers:
        server: dict[str, Any] = {"host": s.host, "protocol": s.protocol}
        if s.pathname:
            server["pathname"] = s.pathname
        if s.description:
            server["description"] = s.description
        doc["servers"][s.id] = server
        for m in found:
            channel_id = f"{s.id}.{m.type}"
            channel: dict[str, Any] = {
                "address": s.address(m.type),
                "title": f"{m.type} on {s.id}",
                "servers": [{"$ref": f"#/servers/{s.id}"}],
                "messages": {m.type: {"$ref": f"#/components/messages/{m.type}"}},
            }
            if bindings := s.channel_bindings(m.type):
                channel["bindings"] = bindings
            doc["channels"][channel_id] = channel
            actions = (["receive"] if m.consumed_by else []) + (["send"] if m.sent_by else [])
            for action in actions:
                operation: dict[str, Any] = {
                    "action": action,
                    "channel": {"$ref": f"#/channels/{channel_id}"},
                    "messages": [{"$ref": f"#/channels/{channel_id}/messages/{m.type}"}],
                    "summary": _who(m),
                }
                if bindings := s.operation_bindings(action, m.type):
                    operation["bindings"] = bindings
                doc["operations"][f"{s.id}.{action}.{m.type}"] = operation
    return doc
