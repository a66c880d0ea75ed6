"""The sagawire error tree, for code that thinks of it as the orchestrator's.

It is defined (with the whole tree drawn) in :mod:`schemas.errors`, the contract package
every other package imports; this module re-exports it unchanged.
"""

from schemas.errors import *  # noqa: F403 - a deliberate, complete re-export
from schemas.errors import __all__ as __all__
