"""The shipped order saga, plus ``bloat``: a saga whose one command the broker refuses.

``bloat.requested`` (small: an id and a size) starts an instance whose command
``bloat.do`` carries ``size`` bytes of padding, built from the state, so a test can
make a command larger than the broker takes (NATS's ``max_payload`` is 1 MiB by
default) from an input well under every inbound limit. Nobody answers ``bloat.do``:
the step times out after :data:`BLOAT_TIMEOUT` seconds and the instance ends
``compensated``. Loaded by the sidecar by path (``--sagas tests/faults/sagas_refused.py``).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from orchestrator import Event, Send, Step, StepSaga
from sagas.order import order

__all__ = ["bloat", "order"]

BLOAT_TIMEOUT = 2.0


class BloatRequested(BaseModel):
    bloat_id: str = Field(min_length=1)
    size: int = Field(ge=0)


class BloatState(BaseModel):
    bloat_id: str
    size: int


def padded(state: BloatState) -> dict[str, Any]:
    return {"bloat_id": state.bloat_id, "padding": "x" * state.size}


bloat = StepSaga(
    "bloat",
    state=BloatState,
    start=Event("bloat.requested", BloatRequested),
    correlate="bloat_id",
    steps=[
        Step(
            "bloat",
            send=Send("bloat.do", build=padded),
            success=Event("bloat.done"),
            failure=Event("bloat.failed"),
            timeout=BLOAT_TIMEOUT,
        ),
    ],
)
