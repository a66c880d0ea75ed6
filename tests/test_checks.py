"""Every load-time check has a failing example, and its error names the saga and culprit."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, Field, SecretStr

from orchestrator import Event, Send, StateMachine, Step, StepSaga, Timeout, When
from orchestrator.errors import DefinitionError


class S(BaseModel):
    id: str
    note: str | None = None


class Start(BaseModel):
    id: str


class Cmd(BaseModel):
    id: str


class NeedsMissing(BaseModel):
    id: str
    not_in_state: str


def machine(rows: list[When], **kw: object) -> object:
    params: dict[str, object] = {
        "state": S,
        "events": [Event("x.started", Start, correlate="id"), Event("x.done", Start)],
        "start": "x.started",
        "final": {"finished": "completed"},
        "transitions": rows,
    }
    params.update(kw)
    return StateMachine("demo", **params)  # type: ignore[arg-type]


GOOD = [
    When("initial", "x.started").send("x.do", Cmd).timer("t", 5).to("waiting"),
    When("waiting", "x.done").to("finished"),
    When("waiting", Timeout("t")).to("finished"),
]


def test_a_good_machine_loads() -> None:
    machine(GOOD)


def test_unreachable_state() -> None:
    rows = [
        *GOOD,
        When("orphan", "x.done").to("finished"),
        When("orphan", Timeout("t")).to("finished"),
    ]
    with pytest.raises(DefinitionError, match=r"saga 'demo'.*state 'orphan' is unreachable"):
        machine(rows)


def test_transition_out_of_final_state() -> None:
    rows = [*GOOD, When("finished", "x.done").to("waiting")]
    with pytest.raises(DefinitionError, match=r"state 'finished' is final .* transitions out"):
        machine(rows)


def test_event_without_correlation() -> None:
    rows = [*GOOD, When("waiting", "x.unknown").to("finished")]
    with pytest.raises(
        DefinitionError, match=r"accepts event 'x.unknown', which has no correlation"
    ):
        machine(rows)


def test_wait_without_timeout() -> None:
    rows = [
        When("initial", "x.started").to("waiting"),
        When("waiting", "x.done").to("finished"),
    ]
    with pytest.raises(DefinitionError, match=r"state 'waiting' waits for x.done with no timeout"):
        machine(rows)


def test_timeout_never_set() -> None:
    rows = [
        When("initial", "x.started").to("waiting"),
        When("waiting", "x.done").to("finished"),
        When("waiting", Timeout("never")).to("finished"),
    ]
    with pytest.raises(DefinitionError, match=r"no row sets timer 'never'"):
        machine(rows)


def test_trap_state_that_is_not_final() -> None:
    rows = [*GOOD, When("waiting", "x.done", guard=lambda s, e: False).to("limbo")]
    with pytest.raises(DefinitionError, match=r"state 'limbo' .* has no way out and is not final"):
        machine(rows)


def test_command_field_missing_from_state() -> None:
    rows = [
        When("initial", "x.started").send("x.do", NeedsMissing).timer("t", 1).to("waiting"),
        *GOOD[1:],
    ]
    with pytest.raises(DefinitionError, match=r"needs not_in_state, not found in state model S"):
        machine(rows)


def test_row_without_target() -> None:
    with pytest.raises(DefinitionError, match=r"has no target: end it with .to"):
        machine([When("initial", "x.started")])


def test_several_problems_are_listed_together() -> None:
    rows = [When("initial", "x.started").to("waiting"), When("waiting", "x.nope").to("finished")]
    with pytest.raises(DefinitionError, match=r"has \d+ problems") as info:
        machine(rows)
    assert "no correlation" in str(info.value)
    assert "no timeout" in str(info.value)


def test_state_model_not_buildable_from_start_event() -> None:
    class Big(BaseModel):
        id: str
        required_extra: int

    with pytest.raises(DefinitionError, match=r"requires required_extra"):
        machine(GOOD, state=Big)


def step(**kw: object) -> Step:
    params: dict[str, object] = {
        "name": "one",
        "send": Send("x.do", Cmd),
        "success": Event("x.ok"),
        "failure": Event("x.failed"),
        "timeout": 5,
    }
    params.update(kw)
    return Step(**params)  # type: ignore[arg-type]


def saga(*steps: Step) -> object:
    return StepSaga(
        "steps", state=S, start=Event("x.started", Start), correlate="id", steps=list(steps)
    )


def test_a_good_step_saga_loads() -> None:
    d = saga(step())
    assert d.kind == "steps"  # type: ignore[attr-defined]


def test_step_without_failure_path() -> None:
    with pytest.raises(DefinitionError, match=r"step 'one' has no failure path"):
        saga(step(failure=(), timeout=None))


def test_step_without_timeout() -> None:
    with pytest.raises(DefinitionError, match=r"step 'one' waits with no timeout"):
        saga(step(timeout=None))


def test_compensation_without_acknowledgement() -> None:
    with pytest.raises(DefinitionError, match=r"compensate=Send\(...\) and compensated_by"):
        saga(step(compensate=Send("x.undo", Cmd)))


def test_duplicate_step_names() -> None:
    with pytest.raises(DefinitionError, match=r"step 'one' is declared twice"):
        saga(step(), step(success=Event("x.ok2"), failure=Event("x.f2")))


def test_reply_shared_by_two_steps() -> None:
    with pytest.raises(DefinitionError, match=r"event 'x.ok' is used twice"):
        saga(step(), step(name="two"))


def test_definition_is_frozen() -> None:
    d = saga(step())
    with pytest.raises(AttributeError):
        d.name = "other"  # type: ignore[attr-defined]
    with pytest.raises(TypeError):
        d.events["y"] = None  # type: ignore[attr-defined, index]


class Later(BaseModel):
    """An event whose field names a class defined only after the saga is declared."""

    id: str
    extra: Missing  # type: ignore[name-defined]  # noqa: F821


def test_a_model_with_a_forward_reference_resolves_at_load_or_is_a_problem() -> None:
    """The engine calls pydantic's validators directly, so every model is built (or
    rebuilt) when the saga loads, not on first use deep inside a batch."""
    events = [Event("x.started", Start, correlate="id"), Event("x.done", Later)]
    assert not Later.__pydantic_complete__
    with pytest.raises(DefinitionError, match=r"model Later is not fully defined.*model_rebuild"):
        machine(GOOD, events=events)
    globals()["Missing"] = Cmd  # the referenced type now exists: the load rebuilds it
    try:
        machine(GOOD, events=events)
        assert Later.__pydantic_complete__
    finally:
        del globals()["Missing"]


class Card(BaseModel):
    number: SecretStr


class Leaky(BaseModel):
    id: str
    scratch: str = Field(default="", exclude=True)
    cards: list[Card] = []


def test_state_fields_that_would_not_survive_the_store() -> None:
    with pytest.raises(DefinitionError) as err:
        machine(GOOD, state=Leaky)
    text = str(err.value)
    assert "state field Leaky.scratch has Field(exclude=True)" in text
    assert "state field Leaky.cards.number is a SecretStr" in text
