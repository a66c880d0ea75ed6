"""Fault injection: sagawire keeps every saga when the world around it breaks.

``sagawire run`` (a subprocess) drives the order saga while the tests break what
it stands on, through a TCP proxy each test owns (:mod:`tests.support.proxy`) and
never by touching the shared services: the database cut mid-run, the broker cut,
``kill -9`` again and again, input too big to take, a command the broker refuses,
a participant's reply lost on the wire. Each test says what must hold, measures
how long recovery took, and prints the figures (``pytest -s``, and a summary at the
end of the run).

CI runs a bounded version; ``SAGAWIRE_FAULTS=full`` runs the long cuts on every
broker (see :mod:`tests.faults.mode`). The pieces, in the order a test uses them:
:mod:`~tests.faults.rig` (one broker, store, proxies and sidecar),
:mod:`~tests.faults.sidecar` (the process, restartable),
:mod:`~tests.faults.participants` (services that always succeed and act once per
command id), :mod:`~tests.faults.lossy` (a reply lost on the wire),
:mod:`~tests.faults.traffic` (orders in, readiness and metrics out),
:mod:`~tests.faults.outage` (the cut-mid-run scenario both outage tests share),
:mod:`~tests.faults.checks` (what must hold) and :mod:`~tests.faults.report`. The
saga modules the sidecar loads by path: ``sagas_fast.py`` (short step timeouts)
and ``sagas_refused.py`` (a command too big for the broker).
"""
