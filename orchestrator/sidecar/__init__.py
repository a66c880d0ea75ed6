"""The sidecar process: settings, start-up and shutdown, the HTTP API, the CLI, logs."""
