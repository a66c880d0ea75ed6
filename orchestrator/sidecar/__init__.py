"""The sidecar: the process that runs the engine beside your services, and its faces.

Open them in this order:

    settings.py ..... Settings and parse_listen: what ``sagawire run`` was told
    config.py ....... load_settings: flags over SAGAWIRE_* over the TOML file, checked
    service.py ...... Sidecar: the process (start-up, run until a signal, shutdown,
                      readiness, accepting an HTTP event)
    api.py .......... SidecarView: what the HTTP API reads of the process; NotAccepting
    http.py ......... build_app: the routes (health, readiness, events, admin views)
    metrics.py ...... Metrics: the Prometheus collector behind ``/metrics``
    cli.py .......... the sidecar's commands: run, check, graph, schema
    logs.py ......... structlog to stderr, secrets redacted
    gc_tuning.py .... the garbage collector's thresholds for a long-running process

Nothing is re-exported here, on purpose: ``sagawire schema`` and every other command
import this package, and must not pay for uvicorn, the engine and the broker clients
that :mod:`~orchestrator.sidecar.service` brings in. Import from the module.
"""
