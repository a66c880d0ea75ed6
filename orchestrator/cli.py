"""The ``sagawire`` command line: the sidecar's commands, the saga authors' and the
yardsticks' on one app.

Every failure a user can cause is one line on stderr naming the culprit and exit code
2 (see :mod:`orchestrator.sidecar.cli`). This module only puts the three sets of
commands together; it is the console script's entry point.
"""

from __future__ import annotations

from orchestrator.sidecar import contract_cli
from orchestrator.sidecar.cli import app
from orchestrator.tooling.cli import register

__all__ = ["app", "main"]

contract_cli.register(app)
register(app)


def main() -> None:
    """Console-script entry point (``sagawire``)."""
    app()


if __name__ == "__main__":  # ``python -m orchestrator.cli``: how the bench starts a child
    main()
