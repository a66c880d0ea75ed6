"""The engine: runs loaded saga definitions against a store and a transport.

One delivery's way through, one module per step, in the order to open them:

    adapters (a Transport) ........ bytes in, a Delivery
    intake.py ..................... decode the envelope (schemas/codec.py) and route it to
                                    each saga's instance (correlate.py): Items to decide
    reading.py .................... what the store knows: inbox marks, instances, parked
    deciding.py ................... per instance, in arrival order, the pure transition
                                    (decide.py: no I/O, no clock) and its unit of work
                                    (persist.py)
    committing.py ................. one transaction for the batch (orchestrator/store/),
                                    then publish, dead-letter, acknowledge
    relay.py ...................... what a publish left behind, published later

Around them: pipeline.py runs a batch through those steps (deciding the next batch
while this one commits), consuming.py feeds it from the transport, housekeeping.py
does what needs no delivery (timers, parked messages), outage.py waits out a store
that went away, working.py holds what the stages share (instances cached or decided
but not committed), batch.py the data passed between them, config.py the settings,
stats.py the counters, model.py the instance and decision, clock.py time. engine.py builds
them all and runs them.

Imports nothing of the sidecar or the tooling; decide.py imports no store, no adapter
and no clock.
"""

from orchestrator.engine.config import EngineConfig, Observer
from orchestrator.engine.engine import Engine

__all__ = ["Engine", "EngineConfig", "Observer"]
