"""How much of the fault suite runs: bounded (the default, what CI runs) or full.

``SAGAWIRE_FAULTS=full`` cuts the database for 20 s *and* 60 s, runs every scenario
on every broker, and waits longer for recovery. The bounded run keeps each cut
longer than the old failure threshold (NATS ``max_deliver`` 10 x a 1 s nack delay
spent a message's deliveries in about 10 s) and picks brokers as each test says.
"""

from __future__ import annotations

import os

FULL = os.environ.get("SAGAWIRE_FAULTS", "").lower() == "full"
MODE = "full" if FULL else "bounded"

ALL_BROKERS = ("nats", "rabbitmq", "kafka")

STORE_CUTS = (20.0, 60.0) if FULL else (20.0,)
"""Seconds the database is unreachable, one run per value."""
BROKER_CUT = 20.0
KILLS = 5
KILL_ORDERS = 300

READY_AGAIN = 2.0
"""Seconds after a cut ends within which ``/readyz`` must answer 200 again."""
NOTICE = 5.0
"""Seconds after a cut starts within which ``/readyz`` must answer 503."""
RECOVERY = 5.0
"""Seconds after a restart (the new process spawned) within which every saga that was
in flight at the kill must move again (issue 14's target)."""
RECOVERY_BY_BROKER = {"kafka": 6.0}
"""Where the test broker itself keeps the target in reach only narrowly. A restarted
Kafka sidecar (dynamic membership, the 2 s session) moved every in-flight saga again
3.4-4.4 s after its spawn on Tansu, whose group coordinator holds every rejoin for at
least a second; the second above the target is for a loaded runner. The bound still
catches a regression to static membership on Tansu (7.5-9.2 s), to the old 6 s session
(11 s with dynamic membership) or to the session-timeout wait before issue 14 (30 s)."""
RECOVERY_CAP = 40.0 if FULL else 15.0
"""How long a kill round waits for in-flight sagas before it records them as stuck."""
SETTLE = 90.0 if FULL else 60.0
"""Seconds the last orders get, after traffic and faults end, to reach their outcome."""
