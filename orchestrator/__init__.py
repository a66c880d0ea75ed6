"""sagawire: a saga orchestrator that runs beside your services.

The public DSL for saga modules is re-exported here::

    from orchestrator import Event, Retry, Send, Step, StepSaga

The parts, in the order data flows through them: ``language/`` (how sagas are
declared and checked), ``engine/`` (the pure core and the stages around it),
``store/`` (durable state), ``sidecar/`` (the process: HTTP, CLI, settings, logs),
``tooling/`` (the demo, the bench and its yardsticks, simulated participants).
``testing`` is the harness for your saga tests.
"""

from orchestrator.engine.model import Instance
from orchestrator.language import (
    INITIAL,
    Deviation,
    Event,
    Plain,
    Retry,
    SagaDefinition,
    Send,
    StateMachine,
    Status,
    Step,
    StepSaga,
    Timeout,
    When,
)

__all__ = [
    "INITIAL",
    "Deviation",
    "Event",
    "Instance",
    "Plain",
    "Retry",
    "SagaDefinition",
    "Send",
    "StateMachine",
    "Status",
    "Step",
    "StepSaga",
    "Timeout",
    "When",
]
