"""The saga language: how a saga is declared, checked and frozen.

Open them in this order:

    parts.py ........ Event, Send, Retry, Step, Timeout, When: what declarations are made of
    steps.py ........ StepSaga: the straight-line form, compiled into state-machine rows
    machine.py ...... StateMachine: the table form
    checks.py ....... load-time checks (unreachable states, no failure path, no correlation...)
    definition.py ... SagaDefinition: the frozen result the engine, the graph and the API read
    status.py ....... Status and Meta: what an instance reports, what guards can read
    statedata.py .... a saga's state to and from stored data
    loader.py ....... saga modules found by path or name

Imports nothing of the engine: the engine reads definitions, never the other way.
"""

from orchestrator.language.definition import INITIAL, SagaDefinition
from orchestrator.language.loader import load_sagas
from orchestrator.language.machine import StateMachine
from orchestrator.language.parts import (
    Deviation,
    Event,
    Plain,
    Retry,
    Send,
    Step,
    Timeout,
    When,
)
from orchestrator.language.status import Meta, Status
from orchestrator.language.steps import StepSaga

__all__ = [
    "INITIAL",
    "Deviation",
    "Event",
    "Meta",
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
    "load_sagas",
]
