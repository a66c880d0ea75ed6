"""``sagawire run``'s settings: a flag over ``SAGAWIRE_*`` over the TOML file over the default,
and every bad value refused at start-up in one line naming the setting, where it came
from and the value (never a secret).

The precedence is checked on :func:`load_settings` (fast, no process) and through the
command (a bad value from the winning layer is the one reported); the one-line, exit 2
promise once more in a real process.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import get_args

import pytest
from pydantic import SecretStr
from typer.testing import CliRunner

from orchestrator.cli import app
from orchestrator.sidecar.config import env_layer, load_settings
from orchestrator.sidecar.logs import LEVELS
from orchestrator.sidecar.settings import OPTIONS, LogLevel, Settings
from schemas.errors import ConfigError
from schemas.limits import Limits

ROOT = Path(__file__).resolve().parents[2]
ORDER = str(ROOT / "sagas" / "order.py")
SAGAWIRE = str(Path(sys.executable).parent / "sagawire")


def toml(tmp_path: Path, text: str, name: str = "sagawire.toml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def refused(flags: dict[str, object] | None = None, **kwargs: object) -> str:
    """The message of the ConfigError ``load_settings`` raises."""
    with pytest.raises(ConfigError) as caught:
        load_settings(flags or {}, **kwargs)  # type: ignore[arg-type]
    return str(caught.value)


# -- precedence -------------------------------------------------------------------------


def test_defaults_when_nothing_is_given() -> None:
    s = load_settings({}, environ={})
    assert s == Settings()
    assert (s.broker, s.store, s.host, s.port, s.group) == (
        "memory://",
        "sqlite:///sagawire.db",
        "127.0.0.1",
        8080,
        "sagawire",
    )
    assert s.limits == Limits()
    assert (s.content_mode, s.log_level, s.catch_up, s.otel) == ("structured", "info", 5.0, False)
    assert (s.admin_token, s.read_token) == (None, None)
    assert s.max_request_bytes == 1024 * 1024
    assert s.deadletter_retention == 14 * 86400
    assert s.stuck_after == 3600


def test_a_flag_beats_the_environment_beats_the_file_beats_the_default(tmp_path: Path) -> None:
    path = toml(
        tmp_path,
        'broker = "memory://from-file"\ngroup = "file-group"\nhttp = "0.0.0.0:7001"\n'
        'catch_up = 1.5\nmax_message_bytes = 4096\nstuck_after = 60\ncontent_mode = "binary"\n',
    )
    environ = {
        "SAGAWIRE_GROUP": "env-group",
        "SAGAWIRE_HTTP": "127.0.0.2:7002",
        "SAGAWIRE_CATCH_UP": "2.5",
        "SAGAWIRE_STUCK_AFTER": "off",
    }
    flags = {"http": "[::1]:7003", "catch_up": "0", "max_attribute_bytes": "128"}
    s = load_settings(flags, path, environ)
    assert s.broker == "memory://from-file"  # only in the file
    assert s.group == "env-group"  # file and environment: the environment
    assert (s.host, s.port) == ("::1", 7003)  # all three: the flag
    assert s.catch_up == 0.0  # all three: the flag
    assert s.stuck_after is None  # "off", from the environment over the file's 60
    assert s.limits == Limits(4096, 128)  # one from the file, one from a flag
    assert s.content_mode == "binary"
    assert s.store == "sqlite:///sagawire.db"  # nowhere: the default


def test_the_file_comes_from_sagawire_config_unless_a_flag_names_one(tmp_path: Path) -> None:
    by_env = toml(tmp_path, 'group = "from-env-file"\n', "a.toml")
    by_flag = toml(tmp_path, 'group = "from-flag-file"\n', "b.toml")
    assert load_settings({}, None, {"SAGAWIRE_CONFIG": by_env}).group == "from-env-file"
    assert load_settings({}, by_flag, {"SAGAWIRE_CONFIG": by_env}).group == "from-flag-file"


def test_booleans_from_every_layer(tmp_path: Path) -> None:
    path = toml(tmp_path, "otel = true\n")
    assert load_settings({}, path, {}).otel is True
    assert load_settings({}, path, {"SAGAWIRE_OTEL": "false"}).otel is False
    assert load_settings({"otel": True}, path, {"SAGAWIRE_OTEL": "0"}).otel is True
    assert load_settings({"otel": False}, path, {}).otel is False  # --no-otel


def test_tokens_from_the_environment_or_the_file(tmp_path: Path) -> None:
    path = toml(tmp_path, 'admin_token = "file-admin"\nread_token = "file-read"\n')
    s = load_settings({}, path, {"SAGAWIRE_ADMIN_TOKEN": "env-admin"})
    assert isinstance(s.admin_token, SecretStr)
    assert s.admin_token.get_secret_value() == "env-admin"
    assert s.read_token is not None and s.read_token.get_secret_value() == "file-read"
    assert "env-admin" not in repr(s) and "file-read" not in repr(s)


def test_the_command_takes_the_winning_layer(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through ``sagawire run`` itself: each layer names a different missing saga path,
    and the one reported is the one that wins."""
    path = toml(tmp_path, f'sagas = "{tmp_path}/from-file"\nstore = "memory://"\n')
    base = ["run", "--config", path, "--http", "127.0.0.1:0"]
    result = runner.invoke(app, base)
    assert result.exit_code == 2 and "from-file" in result.stderr, result.stderr
    monkeypatch.setenv("SAGAWIRE_SAGAS", f"{tmp_path}/from-env")
    result = runner.invoke(app, base)
    assert result.exit_code == 2 and "from-env" in result.stderr, result.stderr
    result = runner.invoke(app, [*base, "--sagas", f"{tmp_path}/from-flag"])
    assert result.exit_code == 2 and "from-flag" in result.stderr, result.stderr


# -- every error names the setting, its source and the value ----------------------------


@pytest.mark.parametrize(
    ("name", "bad", "needle"),
    [
        ("content_mode", "mixed", "content_mode should be 'structured' or 'binary'"),
        ("catch_up", "-1", "catch_up should be greater than or equal to 0"),
        ("catch_up", "inf", "catch_up should be a finite number"),
        ("max_message_bytes", "12", "max_message_bytes should be greater than or equal to 1024"),
        ("max_attribute_bytes", "lots", "max_attribute_bytes should be a valid integer"),
        ("log_level", "loud", "unknown log level 'loud'"),
        ("otel", "maybe", "otel should be a valid boolean"),
        ("stuck_after", "0", "stuck_after should be greater than 0"),
        ("deadletter_retention", "-5", "deadletter_retention should be greater than 0"),
        ("max_request_bytes", "1", "max_request_bytes should be greater than or equal to 1024"),
        ("group", "", "group should have at least 1 character"),
        ("http", "nope", "not HOST:PORT"),
        ("http", "h:99999", "not HOST:PORT"),
        ("broker", "natz://h", "unknown broker URL scheme 'natz://'"),
        ("broker", "nats://h?stram=S", "unknown option 'stram' (did you mean 'stream'?)"),
        ("store", "redis://h", "unknown store URL scheme 'redis://'"),
    ],
)
def test_a_bad_value_names_its_source_in_each_layer(
    tmp_path: Path, name: str, bad: str, needle: str
) -> None:
    flag = f"--{name.replace('_', '-')}"
    assert refused({name: bad}, environ={}).startswith(f"{flag}={bad!r}: ")
    assert needle in refused({name: bad}, environ={})

    var = f"SAGAWIRE_{name.upper()}"
    by_env = refused(environ={var: bad})
    assert by_env.startswith(f"{var}={bad!r}: ") and needle in by_env

    path = toml(tmp_path, f"{name} = {bad!r}\n".replace("'", '"'))
    by_file = refused(config=path, environ={})
    assert by_file.startswith(f"{path}: {name}={bad!r}: ") and needle in by_file


def test_a_wrong_type_in_the_file_is_named(tmp_path: Path) -> None:
    path = toml(tmp_path, 'group = 5\nhttp = 8080\nmax_message_bytes = "big"\n')
    text = refused(config=path, environ={})
    assert text.startswith(f"{path}: http=8080: http should be a string")
    path = toml(tmp_path, "group = 5\ncatch_up = [1]\n")
    text = refused(config=path, environ={})
    assert f"{path}: group=5: group should be a valid string" in text
    assert f"{path}: catch_up=[1]: catch_up should be a valid number" in text  # all, one line
    assert "\n" not in text


def test_an_unknown_key_in_the_file_is_named_with_a_guess(tmp_path: Path) -> None:
    path = toml(tmp_path, 'brokr = "nats://h"\n')
    text = refused(config=path, environ={})
    assert text.startswith(f"{path}: unknown setting 'brokr' (did you mean 'broker'?)")
    assert "content_mode" in text  # the settings it takes
    assert "did you mean 'max_message_bytes'" in refused(
        config=toml(tmp_path, "max-message-bytes = 2048\n"), environ={}
    )
    for internal in ("counts_ttl", "host", "port", "limits"):  # not options: keywords only
        text = refused(config=toml(tmp_path, f"{internal} = 1\n"), environ={})
        assert f"unknown setting {internal!r}" in text


def test_bad_toml_names_the_file_and_the_line(tmp_path: Path) -> None:
    path = toml(tmp_path, 'broker = "memory://"\ngroup = \n')
    text = refused(config=path, environ={})
    assert text.startswith(f"{path}: not valid TOML: ")
    assert "line 2" in text


def test_a_missing_file_names_where_its_path_came_from(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.toml")
    assert refused(config=missing, environ={}) == f"--config={missing!r}: no such file"
    assert (
        refused(environ={"SAGAWIRE_CONFIG": missing})
        == f"SAGAWIRE_CONFIG={missing!r}: no such file"
    )


def test_secrets_are_never_echoed(tmp_path: Path) -> None:
    text = refused(environ={"SAGAWIRE_ADMIN_TOKEN": "   "})
    assert text.startswith("SAGAWIRE_ADMIN_TOKEN='***': empty token")
    path = toml(tmp_path, "read_token = 123456789\n")
    text = refused(config=path, environ={})
    assert text.startswith(f"{path}: read_token='***': read_token should be a valid string")
    assert "123456789" not in text
    for url in ("amqp://app:pw-s3cret@h/?exchnge=x", "kafka://app:pw-s3cret@h:9092?partitons=1"):
        text = refused({"broker": url}, environ={})
        assert "s3cret" not in text and "--broker='" in text, text
    text = refused(environ={"SAGAWIRE_STORE": "redis://app:pw-s3cret@h/0"})
    assert "s3cret" not in text and "SAGAWIRE_STORE='redis://app:***@h/0'" in text


# -- what reads what --------------------------------------------------------------------


def test_settings_made_in_code_read_no_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests and embedders build ``Settings(...)`` by keyword; a SAGAWIRE_BROKER in the
    shell must not slip into them."""
    monkeypatch.setenv("SAGAWIRE_BROKER", "kafka://elsewhere:9092")
    monkeypatch.setenv("SAGAWIRE_GROUP", "not-mine")
    s = Settings(store="memory://", port=0)
    assert (s.broker, s.group, s.port) == ("memory://", "sagawire", 0)
    with pytest.raises(ValueError, match="colour"):
        Settings(colour="blue")  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="publish_timeout"):
        Settings(publish_timeout=0)


def test_other_sagawire_variables_are_not_settings() -> None:
    environ = {"SAGAWIRE_GC": "off", "SAGAWIRE_NATS_TOKEN": "t", "SAGAWIRE_GROUP": "g"}
    assert set(env_layer(environ)) == {"group"}


def test_every_option_has_a_flag_or_is_a_token() -> None:
    """An option without a flag would silently be file- and env-only; the tokens are,
    on purpose: a command line is visible to every user of the host (``ps``)."""
    from typer.main import get_command

    run = get_command(app).commands["run"]  # type: ignore[attr-defined]
    flags = {p.name for p in run.params}
    assert set(OPTIONS) - flags == {"admin_token", "read_token"}


def test_log_levels_are_the_logging_levels() -> None:
    assert set(get_args(LogLevel)) == set(LEVELS)
    assert load_settings({"log_level": "WARN"}, environ={}).log_level == "warning"


def test_the_readme_configuration_example_loads(tmp_path: Path) -> None:
    """Docs are tests: the README's TOML example is a file ``sagawire run`` takes."""
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```toml\n(.*?)```", readme, re.DOTALL)
    assert blocks, "the README lost its configuration example"
    s = load_settings({}, toml(tmp_path, blocks[0]), {})
    assert s.broker.startswith("nats://")


# -- the command line -------------------------------------------------------------------


@pytest.mark.parametrize("flag", ["--version", "-V"])
def test_version(runner: CliRunner, flag: str) -> None:
    result = runner.invoke(app, [flag])
    assert result.exit_code == 0
    assert result.stdout == f"sagawire {importlib.metadata.version('sagawire')}\n"


def test_a_bad_setting_is_one_line_and_exit_2_in_a_real_process(tmp_path: Path) -> None:
    path = toml(tmp_path, 'store = "memory://"\ncontent_mode = "mixed"\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAGAWIRE_")}
    env["SAGAWIRE_CONFIG"] = path
    result = subprocess.run(
        [SAGAWIRE, "run", "--sagas", ORDER],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=ROOT,
    )
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"sagawire: error: {path}: content_mode='mixed': content_mode should be"
        " 'structured' or 'binary'"
    ]
