"""A reply's fields merged into the state meet the state's own rules.

The engine copies a typed reply's values into the state without validating it again
when that cannot change the outcome. These cases are the ones where it could: a
constraint or a validator only the state declares, a string rule of the state's model.
Each must reject the reply (dead letter, instance unchanged) or apply the validator,
exactly as the same reply sent without a model would."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict, Field, field_validator

from orchestrator import Event, Send, Step, StepSaga
from orchestrator.testing import SagaHarness


class Start(BaseModel):
    job_id: str


class Work(BaseModel):
    job_id: str


class More(BaseModel):  # built from the state right after the merge
    job_id: str
    code: str | None


class DoneLoose(BaseModel):  # the reply's own model is looser than the state
    job_id: str
    code: str


def saga(state: type[BaseModel], done: type[BaseModel] | None) -> StepSaga:
    return StepSaga(
        "job",
        state=state,
        start=Event("job.started", Start),
        correlate="job_id",
        steps=[
            Step("work", send=Send("work.do", Work), success=Event("work.done", done), timeout=30),
            Step("more", send=Send("more.do", More), success=Event("more.done"), timeout=30),
        ],
    )


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
    async with SagaHarness(saga(state, done)) as h:
        await h.send("job.started", {"job_id": "j"})
        await h.send("work.done", {"job_id": "j", "code": code})
        sent = [c.data["code"] for c in h.commands("more.do")]
        return (await h.instance("j")), h.dead_letters(), sent


@pytest.mark.parametrize("done", [DoneLoose, None], ids=["typed reply", "untyped reply"])
async def test_a_constraint_only_the_state_declares_rejects_the_reply(
    done: type[BaseModel] | None,
) -> None:
    inst, dead, sent = await reply(Constrained, done, "ab")
    assert (inst.state, inst.data.code, sent) == ("work", None, [])  # unchanged
    assert len(dead) == 1
    assert "code" in dead[0].reason
    assert "at least 3 characters" in dead[0].reason


@pytest.mark.parametrize("done", [DoneLoose, None], ids=["typed reply", "untyped reply"])
async def test_a_state_validator_runs_on_merged_fields(done: type[BaseModel] | None) -> None:
    inst, dead, sent = await reply(Validated, done, "abc")
    assert not dead
    assert (inst.data.code, sent) == ("ABC", ["ABC"])


@pytest.mark.parametrize("done", [DoneLoose, None], ids=["typed reply", "untyped reply"])
async def test_a_string_rule_of_the_state_model_applies(done: type[BaseModel] | None) -> None:
    inst, dead, sent = await reply(Lowered, done, "AbC")
    assert not dead
    assert (inst.data.code, sent) == ("abc", ["abc"])


async def test_a_reply_that_meets_the_state_rules_is_merged() -> None:
    inst, dead, sent = await reply(Constrained, DoneLoose, "abcd")
    assert not dead
    assert (inst.state, inst.data.code, sent) == ("more", "abcd", ["abcd"])
