"""The engine: runs loaded saga definitions against a store and a transport.

(Placeholder docstring: replaced when the stages are composed.)
"""

from orchestrator.engine.batch import EngineConfig, Observer
from orchestrator.engine.engine import Engine

__all__ = ["Engine", "EngineConfig", "Observer"]
