"""The engine's hand-written fast paths behave like the pydantic calls they replace.

Each case here is one a user can see: a command's data on the wire, a reply
dead-lettered on one path and applied on the other, a state that no longer loads from
the store (and takes the engine down when it must be read back), an engine that raises
instead of dead-lettering. The reference is what the slow path does (the same reply
sent without a model takes ``model_dump`` -> ``model_validate``) and what the README
promises: a state field is filled in from a reply's "same field name", a restart loses nothing,
"bytes that are not JSON ... go to sagawire.deadletter", and bad input never crashes
the engine."""

from __future__ import annotations

import enum
from decimal import Decimal
from functools import cached_property
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict, Field, computed_field, field_validator
from pydantic.alias_generators import to_camel

from orchestrator import Event, Send, StateMachine, Step, StepSaga, When
from orchestrator.language.definition import SagaDefinition
from orchestrator.testing import SagaHarness
from schemas.codec import decode
from schemas.errors import DecodeError


class Start(BaseModel):
    job_id: str


class Work(BaseModel):
    job_id: str


def saga(
    state: type[BaseModel],
    done: type[BaseModel] | None,
    *,
    more: type[BaseModel] | None = None,
    build: Any = None,
) -> SagaDefinition:
    """Two steps: ``work.done`` (typed by ``done``, or untyped) is merged into the state,
    then ``more.do`` is built from the merged state."""
    return StepSaga(
        "job",
        state=state,
        start=Event("job.started", Start),
        correlate="job_id",
        steps=[
            Step("work", send=Send("work.do", Work), success=Event("work.done", done), timeout=30),
            Step(
                "more",
                send=Send("more.do", more, build=build),
                success=Event("more.done"),
                timeout=30,
            ),
        ],
    )


def raw(type: str, data: bytes, id: str = "r-1") -> bytes:
    return (
        b'{"specversion":"1.0","id":"'
        + id.encode()
        + b'","source":"svc","type":"'
        + type.encode()
        + b'","correlationid":"j","data":'
        + data
        + b"}"
    )


TYPED = pytest.mark.parametrize("typed", [True, False], ids=["typed reply", "untyped reply"])


# -- decide._merge: the copy without validation ----------------------------------------


class Counted(BaseModel):
    job_id: str
    n: int


class WithPostInit(BaseModel):  # a derived field, kept in step by model_post_init
    job_id: str
    n: int | None = None
    total: int = 0

    def model_post_init(self, context: Any) -> None:
        self.total = 100 + (self.n or 0)


class MoreTotal(BaseModel):
    job_id: str
    total: int


@TYPED
async def test_model_post_init_runs_on_a_merged_reply(typed: bool) -> None:
    async with SagaHarness(saga(WithPostInit, Counted if typed else None, more=MoreTotal)) as h:
        await h.send("job.started", {"job_id": "j"})
        await h.send("work.done", {"job_id": "j", "n": 5})
        assert not h.dead_letters()
        assert [c.data["total"] for c in h.commands("more.do")] == [105]
        data = (await h.instance("j")).data  # as a reload computes it
        assert isinstance(data, WithPostInit)
        assert data.total == 105


class WithCachedTotal(BaseModel):
    job_id: str
    n: int | None = None

    @computed_field  # type: ignore[prop-decorator]
    @cached_property
    def total(self) -> int:
        return 100 + (self.n or 0)


def send_total(state: Any) -> dict[str, Any]:
    return {"total": state.total}


@TYPED
async def test_a_cached_property_is_not_carried_over_stale(typed: bool) -> None:
    # computed once when the first state is stored, then copied into the merged state
    definition = saga(WithCachedTotal, Counted if typed else None, build=send_total)
    async with SagaHarness(definition) as h:
        await h.send("job.started", {"job_id": "j"})
        await h.send("work.done", {"job_id": "j", "n": 5})
        assert not h.dead_letters()
        assert [c.data for c in h.commands("more.do")] == [{"total": 105}]


class Color(enum.Enum):
    RED = "red"


class Painted(BaseModel):
    job_id: str
    color: Color


class ValuesState(BaseModel):  # holds plain values, as its config says
    model_config = ConfigDict(use_enum_values=True)
    job_id: str
    color: Color | None = None


def send_shout(state: Any) -> dict[str, Any]:
    return {"shout": state.color.upper()}  # a str, per use_enum_values


@TYPED
async def test_the_state_keeps_its_use_enum_values_rule(typed: bool) -> None:
    definition = saga(ValuesState, Painted if typed else None, build=send_shout)
    async with SagaHarness(definition) as h:
        await h.send("job.started", {"job_id": "j"})
        await h.send("work.done", {"job_id": "j", "color": "red"})
        assert [d.reason for d in h.dead_letters()] == []
        assert [c.data for c in h.commands("more.do")] == [{"shout": "RED"}]


class PaintedValues(BaseModel):  # the reply's model stores plain values...
    model_config = ConfigDict(use_enum_values=True)
    job_id: str
    color: Color


class EnumState(BaseModel):  # ...the state's does not
    job_id: str
    color: Color | None = None


def send_member(state: Any) -> dict[str, Any]:
    return {"name": state.color.name}


@TYPED
async def test_the_state_gets_enum_members_when_it_asks_for_them(typed: bool) -> None:
    definition = saga(EnumState, PaintedValues if typed else None, build=send_member)
    async with SagaHarness(definition) as h:
        await h.send("job.started", {"job_id": "j"})
        await h.send("work.done", {"job_id": "j", "color": "red"})
        assert [d.reason for d in h.dead_letters()] == []
        assert [c.data for c in h.commands("more.do")] == [{"name": "RED"}]


# -- aliases: fields are matched by name on every path, and survive the store -----------


class Receipt(BaseModel):
    job_id: str
    receipt_id: str


class MoreReceipt(BaseModel):
    job_id: str
    receipt_id: str


class CamelState(BaseModel):  # pydantic's recipe for a camelCase API
    model_config = ConfigDict(
        alias_generator=to_camel, validate_by_name=True, serialize_by_alias=True
    )
    job_id: str
    receipt_id: str | None = None


class AliasedState(BaseModel):
    job_id: str
    receipt_id: str | None = Field(default=None, alias="receiptId")


@TYPED
@pytest.mark.parametrize("state", [CamelState, AliasedState], ids=lambda m: m.__name__)
async def test_a_reply_fills_an_aliased_state_field_by_its_name(
    state: type[BaseModel], typed: bool
) -> None:
    async with SagaHarness(saga(state, Receipt if typed else None, more=MoreReceipt)) as h:
        await h.send("job.started", {"job_id": "j"})
        await h.send("work.done", {"job_id": "j", "receipt_id": "r-9"})
        assert [d.reason for d in h.dead_letters()] == []
        assert [c.data["receipt_id"] for c in h.commands("more.do")] == ["r-9"]
        data = (await h.instance("j")).data  # as stored
        assert isinstance(data, state)
        assert data.model_dump(by_alias=False)["receipt_id"] == "r-9"


def set_receipt(state: Any, event: Any) -> dict[str, Any]:
    return {"receipt_id": "r-1"}


async def test_an_update_returning_a_dict_fills_an_aliased_state_field() -> None:
    # dsl._wrap_update merges the dict the way decide._merge's slow path does
    definition = StateMachine(
        "camel",
        state=CamelState,
        events=[Event("job.started", Start, correlate="job_id")],
        start="job.started",
        final={"done": "completed"},
        transitions=[
            When("initial", "job.started")
            .update(set_receipt)
            .send("more.do", MoreReceipt)
            .to("done")
        ],
    )
    async with SagaHarness(definition) as h:
        await h.send("job.started", {"job_id": "j"})
        assert [d.reason for d in h.dead_letters()] == []
        assert [c.data["receipt_id"] for c in h.commands("more.do")] == ["r-1"]


class Filled(BaseModel):
    job_id: str
    receipt_id: str | None = None


class AliasedCommand(BaseModel):  # the wire name differs from the state's field name
    job_id: str
    receipt_id: str = Field(alias="receiptId")


async def test_a_command_with_aliases_is_filled_from_same_named_state_fields() -> None:
    async with SagaHarness(saga(Filled, Receipt, more=AliasedCommand)) as h:
        await h.send("job.started", {"job_id": "j"})
        await h.send("work.done", {"job_id": "j", "receipt_id": "r-9"})
        assert [d.reason for d in h.dead_letters()] == []
        # on the wire by field name, as every command whose model does not say otherwise
        assert [c.data for c in h.commands("more.do")] == [{"job_id": "j", "receipt_id": "r-9"}]


# -- persist: what is stored loads back -------------------------------------------------


class Strict(BaseModel):  # a computed field in a state that forbids extra input
    model_config = ConfigDict(extra="forbid")
    job_id: str
    n: int | None = None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def doubled(self) -> int:
        return 2 * (self.n or 0)


async def test_a_state_with_a_computed_field_loads_back_from_the_store() -> None:
    async with SagaHarness(saga(Strict, Counted)) as h:
        await h.send("job.started", {"job_id": "j"})
        await h.send("work.done", {"job_id": "j", "n": 5})
        data = (await h.instance("j")).data
        assert isinstance(data, Strict)
        assert data.doubled == 10
        h.engine.working.distrust()  # as after a restart: the next message reads the store
        await h.send("more.done", {"job_id": "j"})
        assert (await h.instance("j")).state == "completed"


class Measured(BaseModel):
    job_id: str
    ratio: float


class Ratio(BaseModel):
    job_id: str
    ratio: float = 0.0


@pytest.mark.parametrize("number", [b"NaN", b"Infinity", b"-Infinity"])
def test_decode_refuses_what_is_not_json(number: bytes) -> None:
    # the slow path (orjson.loads, then validate) said "body is not JSON"
    with pytest.raises(DecodeError):
        decode(raw("work.done", b'{"job_id":"j","ratio":' + number + b"}"))


@pytest.mark.parametrize("number", [b"NaN", b"1e999"])
async def test_a_reply_never_leaves_a_state_that_cannot_be_loaded(number: bytes) -> None:
    async with SagaHarness(saga(Ratio, Measured)) as h:
        await h.send("job.started", {"job_id": "j"})
        await h.send_raw("work.done", raw("work.done", b'{"job_id":"j","ratio":' + number + b"}"))
        await h.instance("j")  # the store's copy validates
        h.engine.working.distrust()  # as after a restart
        await h.send("more.done", {"job_id": "j"})  # must not raise out of the engine


# -- encode: what the engine decided is published, or dead-lettered, never a crash -----


class Big(BaseModel):
    job_id: str
    n: int


class BigState(BaseModel):
    job_id: str
    n: int = 0


async def test_an_integer_beyond_64_bits_reaches_the_command() -> None:
    # valid JSON, validated as an int by the reply's model; orjson cannot write it
    async with SagaHarness(saga(BigState, Big, more=Big)) as h:
        await h.send("job.started", {"job_id": "j"})
        n = 2**64
        await h.send_raw("work.done", raw("work.done", b'{"job_id":"j","n":%d}' % n))
        assert [c.data["n"] for c in h.commands("more.do")] == [n]


class Priced(BaseModel):
    job_id: str
    amount: Decimal = Decimal("12.50")


def send_amount(state: Any) -> dict[str, Any]:
    return {"amount": state.amount}


async def test_a_builder_value_orjson_cannot_write_does_not_crash_the_engine() -> None:
    async with SagaHarness(saga(Priced, None, build=send_amount)) as h:
        await h.send("job.started", {"job_id": "j"})
        await h.send("work.done", {"job_id": "j"})  # must not raise out of the engine
        assert [c.data for c in h.commands("more.do")] == [{"amount": "12.50"}]


# -- decide._merge: the state's own rules (constraints, validators, string settings) --
# A reply's fields merged into the state must meet them, as the same reply sent without
# a model does: reject the reply (dead letter, instance unchanged) or apply the validator.


class DoneLoose(BaseModel):  # the reply's own model is looser than the state
    job_id: str
    code: str


TYPED_DONE = pytest.mark.parametrize(
    "done", [DoneLoose, None], ids=["typed reply", "untyped reply"]
)


class MoreCode(BaseModel):  # built from the state right after the merge
    job_id: str
    code: str | None


class Constrained(BaseModel):
    job_id: str
    code: str | None = Field(default=None, min_length=3)


class Validated(BaseModel):
    job_id: str
    code: str | None = None

    @field_validator("code")
    @classmethod
    def upper(cls, v: str | None) -> str | None:
        return v.upper() if v is not None else v


class Lowered(BaseModel):
    model_config = ConfigDict(str_to_lower=True)
    job_id: str
    code: str | None = None


async def reply(state: type[BaseModel], done: type[BaseModel] | None, code: str) -> Any:
    async with SagaHarness(saga(state, done, more=MoreCode)) as h:
        await h.send("job.started", {"job_id": "j"})
        await h.send("work.done", {"job_id": "j", "code": code})
        sent = [c.data["code"] for c in h.commands("more.do")]
        return (await h.instance("j")), h.dead_letters(), sent


@TYPED_DONE
async def test_a_constraint_only_the_state_declares_rejects_the_reply(
    done: type[BaseModel] | None,
) -> None:
    inst, dead, sent = await reply(Constrained, done, "ab")
    assert (inst.state, inst.data.code, sent) == ("work", None, [])  # unchanged
    assert len(dead) == 1
    assert "code" in dead[0].reason
    assert "at least 3 characters" in dead[0].reason


@TYPED_DONE
async def test_a_state_validator_runs_on_merged_fields(done: type[BaseModel] | None) -> None:
    inst, dead, sent = await reply(Validated, done, "abc")
    assert not dead
    assert (inst.data.code, sent) == ("ABC", ["ABC"])


@TYPED_DONE
async def test_a_string_rule_of_the_state_model_applies(done: type[BaseModel] | None) -> None:
    inst, dead, sent = await reply(Lowered, done, "AbC")
    assert not dead
    assert (inst.data.code, sent) == ("abc", ["abc"])


async def test_a_reply_that_meets_the_state_rules_is_merged() -> None:
    inst, dead, sent = await reply(Constrained, DoneLoose, "abcd")
    assert not dead
    assert (inst.state, inst.data.code, sent) == ("more", "abcd", ["abcd"])


class StartWithHidden(BaseModel):  # a field kept out of the model's own dumps
    job_id: str
    note: str = Field(exclude=True)


class NoteState(BaseModel):
    job_id: str
    note: str


async def test_a_start_event_fills_the_state_from_a_field_its_model_excludes() -> None:
    definition = StepSaga(
        "job",
        state=NoteState,
        start=Event("job.started", StartWithHidden),
        correlate="job_id",
        steps=[Step("work", send=Send("work.do", Work), success=Event("work.done"), timeout=30)],
    )
    async with SagaHarness(definition) as h:
        await h.send("job.started", {"job_id": "j", "note": "n"})
        assert [d.reason for d in h.dead_letters()] == []
        assert (await h.instance("j")).data == NoteState(job_id="j", note="n")


# -- a command's data straight from the state's serializer ---------------------------


class Colour(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Line(BaseModel):
    sku: str
    qty: int


class Wide(BaseModel):
    order_id: str
    items: list[Line]
    amount: Decimal
    colour: Colour
    note: str | None = None
    at: Any = None


def _dump_and_build(command: type[BaseModel], state: BaseModel, reason: str | None = None) -> Any:
    """Both ways to a command's data: the fast one and build-then-dump."""
    from datetime import UTC, datetime

    from orchestrator.language.definition import Context
    from orchestrator.language.parts import build_from_state, dump_from_state
    from orchestrator.language.status import Meta

    ctx = Context(state, None, None, "cid-1", Meta(failure=reason), datetime.now(UTC))  # type: ignore[arg-type]
    outcomes = []
    for way in (dump_from_state(command), None):
        try:
            if way is not None:
                got = way(ctx)
            else:
                built = build_from_state(command)(ctx)
                got = built.__pydantic_serializer__.to_python(built, mode="json")
            outcomes.append(("ok", got, list(got)))
        except Exception as exc:
            outcomes.append(("error", type(exc).__name__, None))
    return outcomes


def _wide(**changes: Any) -> Wide:
    values: dict[str, Any] = {
        "order_id": "o-1",
        "items": [Line(sku="s", qty=2)],
        "amount": Decimal("12.50"),
        "colour": Colour.RED,
        "note": "hello",
    }
    return Wide(**(values | changes))


class Plain(BaseModel):
    order_id: str
    items: list[Line]
    amount: Decimal
    colour: Colour


class Reordered(BaseModel):
    colour: Colour
    order_id: str


class NoteRequired(BaseModel):
    order_id: str
    note: str


class NoteShort(BaseModel):
    order_id: str
    note: str = Field(max_length=3)


class EnumValues(BaseModel):
    model_config = ConfigDict(use_enum_values=True)
    colour: Colour


class ByAlias(BaseModel):
    model_config = ConfigDict(serialize_by_alias=True, alias_generator=to_camel)
    order_id: str


class Serialized(BaseModel):
    order_id: str

    @field_validator("order_id")
    @classmethod
    def upper(cls, v: str) -> str:
        return v.upper()


class Computed(BaseModel):
    order_id: str

    @computed_field  # type: ignore[prop-decorator]
    @property
    def shout(self) -> str:
        return self.order_id.upper()


class WithReason(BaseModel):
    order_id: str
    reason: str


class Excluded(BaseModel):
    order_id: str
    note: str | None = Field(default=None, exclude=True)


@pytest.mark.parametrize(
    ("command", "state"),
    [
        (Plain, _wide()),
        (Reordered, _wide()),
        (NoteRequired, _wide()),
        (NoteRequired, _wide(note=None)),  # the command refuses None: both ways refuse it
        (NoteShort, _wide()),  # a constraint only the command has: validated
        (NoteShort, _wide(note="ok")),
        (EnumValues, _wide()),
        (ByAlias, _wide()),
        (Serialized, _wide()),
        (Computed, _wide()),
        (WithReason, _wide()),
        (Excluded, _wide()),
    ],
)
def test_a_command_from_the_state_is_the_same_data_either_way(
    command: type[BaseModel], state: BaseModel
) -> None:
    """What the wire carries, key order included, whichever way the data was made."""
    fast, slow = _dump_and_build(command, state, reason="out of stock")
    assert fast == slow
