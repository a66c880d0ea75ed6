"""Where ``sagawire run``'s settings come from: flags, ``SAGAWIRE_*`` variables, a TOML file.

Each option (:data:`~orchestrator.sidecar.settings.OPTIONS`) is taken from the first of
these that gives it: a flag (``--broker``), the environment (``SAGAWIRE_BROKER``), the
file named by ``--config`` or ``SAGAWIRE_CONFIG`` (``broker = "..."``), else its
default. The three layers are read apart and merged here, rather than by
pydantic-settings' own source chain, so that every value keeps a label saying where it
came from: a bad one is refused at start-up in one line that names the setting, its
source and the value, e.g. ``SAGAWIRE_CONTENT_MODE='mixed': content_mode should be
'structured' or 'binary'``, never with a secret in it. A key the file does not know is
refused too (with the nearest setting's name), rather than ignored: a misspelt
``brokr =`` would otherwise leave the sidecar on ``memory://`` without a word.
"""

from __future__ import annotations

import difflib
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from adapters._util import redact_url
from orchestrator.sidecar.settings import OPTIONS, SECRETS, Settings, parse_listen
from schemas.errors import ConfigError

__all__ = ["CONFIG_ENV", "Given", "env_layer", "file_layer", "load_settings"]

CONFIG_ENV = "SAGAWIRE_CONFIG"
"""The variable naming the TOML file when ``--config`` does not."""


@dataclass(frozen=True, slots=True)
class Given:
    """One value of one option, and where it came from (``--broker``, ``SAGAWIRE_BROKER``,
    ``sagawire.toml: broker``)."""

    value: Any
    source: str

    def shown(self, name: str) -> str:
        """``SOURCE=VALUE`` as an error may print it: secrets as ``***``, URLs redacted."""
        if name in SECRETS:
            value = "'***'"
        elif isinstance(self.value, str):
            value = repr(redact_url(self.value) if "://" in self.value else self.value)
        else:
            value = repr(self.value)
        return f"{self.source}={value}"


def env_var(name: str) -> str:
    """The variable of option ``name``: ``SAGAWIRE_`` and the name in capitals."""
    return f"{Settings.model_config.get('env_prefix', '')}{name.upper()}"


def flag_layer(flags: Mapping[str, Any]) -> dict[str, Given]:
    """The options given on the command line (None: not given)."""
    return {
        name: Given(value, f"--{name.replace('_', '-')}")
        for name, value in flags.items()
        if value is not None
    }


def env_layer(environ: Mapping[str, str]) -> dict[str, Given]:
    """The options set in ``environ``, by their ``SAGAWIRE_*`` names.

    Other ``SAGAWIRE_*`` variables (``SAGAWIRE_GC``, ``SAGAWIRE_NATS_TOKEN``...) belong
    to other readers and are left alone."""
    return {name: Given(environ[var], var) for name in OPTIONS if (var := env_var(name)) in environ}


def file_layer(path: str, given_as: str) -> dict[str, Given]:
    """The options in the TOML file at ``path`` (named by ``given_as``, e.g.
    ``--config='x.toml'``); ConfigError if it is missing, not TOML, or has a key that
    is no option."""
    try:
        with Path(path).open("rb") as file:
            data = tomllib.load(file)
    except FileNotFoundError:
        raise ConfigError(f"{given_as}: no such file") from None
    except OSError as exc:
        raise ConfigError(f"{given_as}: cannot read it: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    for key in data:
        if key not in OPTIONS:
            close = difflib.get_close_matches(key, OPTIONS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(
                f"{path}: unknown setting {key!r}{hint}; settings: {', '.join(OPTIONS)}"
            )
    return {name: Given(value, f"{path}: {name}") for name, value in data.items()}


def load_settings(
    flags: Mapping[str, Any], config: str | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """The settings from ``flags`` (option name -> value, None where not given), then
    ``environ`` (default ``os.environ``), then the TOML file ``config`` (default
    ``$SAGAWIRE_CONFIG``), then the defaults; ConfigError naming each bad one."""
    environ = os.environ if environ is None else environ
    unknown = set(flags) - set(OPTIONS)
    if unknown:  # a programming error of the caller's, said plainly all the same
        raise ConfigError(f"not sagawire settings: {', '.join(sorted(unknown))}")
    if config is not None:
        layers = [file_layer(config, f"--config={config!r}")]
    elif CONFIG_ENV in environ:
        path = environ[CONFIG_ENV]
        layers = [file_layer(path, f"{CONFIG_ENV}={path!r}")]
    else:
        layers = []
    layers += [env_layer(environ), flag_layer(flags)]
    given: dict[str, Given] = {}
    for layer in layers:  # lowest precedence first: each layer overrides the one before
        given.update(layer)
    return _validated(given)


def _validated(given: dict[str, Given]) -> Settings:
    """``Settings`` of the merged values; ConfigError naming a bad one and its source."""
    fields: dict[str, str] = {}  # field name -> option it came from (host, port: http)
    values: dict[str, Any] = {}
    for name, g in given.items():
        if name == "http":
            if not isinstance(g.value, str):
                raise ConfigError(f"{g.shown(name)}: http should be a string, HOST:PORT")
            try:
                values["host"], values["port"] = parse_listen(g.value)
            except ConfigError as exc:
                raise ConfigError(f"{g.shown(name)}: {exc}") from None
            fields.update(host=name, port=name)
        else:
            values[name] = g.value
            fields[name] = name
    try:
        return Settings(**values)
    except ValidationError as exc:  # every bad value at once, each with its source
        problems = []
        for error in exc.errors(include_url=False):
            field = str(error["loc"][0]) if error["loc"] else ""
            name = fields.get(field, field)
            where = given[name].shown(name) if name in given else name
            problems.append(f"{where}: {_problem(name, error['msg'])}")
        raise ConfigError("; ".join(problems)) from None


def _problem(name: str, message: str) -> str:
    """pydantic's message about option ``name``, saying which option it is: "Input
    should be..." becomes "catch_up should be..."."""
    if message.startswith("Value error, "):
        return message.removeprefix("Value error, ")
    subject, should, rest = message.partition(" should ")
    if should and subject.isalpha():
        return f"{name} should {rest}"
    return f"{name}: {message}"
