"""sagawire: a saga orchestrator that runs beside your services.

The public DSL for saga modules is re-exported here::

    from orchestrator import Event, Retry, Send, Step, StepSaga
"""

from orchestrator.definition import INITIAL, SagaDefinition
from orchestrator.dsl import Event, Retry, Send, StateMachine, Step, StepSaga, Timeout, When
from orchestrator.model import Instance, Status

__all__ = [
    "INITIAL",
    "Event",
    "Instance",
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
