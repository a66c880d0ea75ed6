"""The checkout choreography end to end: services react to each other, sagawire watches.

Raw clients play inventory, payment and shipping on a real broker, each consuming
with an identity of its own, while ``sagawire run --sagas sagas/checkout.py`` tracks
every checkout with its own consumer group, is killed with -9 and comes back. The
pieces, in the order a run uses them: :mod:`~tests.e2e.choreography.fates` (orders,
fates, bytes), :mod:`~tests.e2e.choreography.services` (the services and the audit of
everything published), :mod:`~tests.e2e.choreography.driver` (the run),
:mod:`~tests.e2e.choreography.checks` (what must hold).
"""
