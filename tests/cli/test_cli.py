"""The ``sagawire`` command line: every user mistake is one stderr line and exit code 2.

Error cases run the real console script in a subprocess (with the default log
level), because "one line, no traceback" is about what an operator really sees.
The read-only commands run in-process with Typer's runner, which is faster.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import structlog
from typer.testing import CliRunner

from orchestrator.cli import app

ROOT = Path(__file__).resolve().parents[2]
ORDER = str(ROOT / "sagas" / "order.py")
SAGAWIRE = str(Path(sys.executable).parent / "sagawire")

FAILS_ITS_CHECKS = """
from pydantic import BaseModel
from orchestrator import Event, Send, StateMachine, Timeout, When

class S(BaseModel):
    id: str

class Start(BaseModel):
    id: str

broken = StateMachine(
    "broken",
    state=S,
    events=[Event("x.started", Start, correlate="id"), Event("x.done", Start)],
    start="x.started",
    final={"finished": "completed"},
    transitions=[
        When("initial", "x.started").send("x.do", S).timer("t", 5).to("waiting"),
        When("waiting", "x.done").to("finished"),
        When("waiting", Timeout("t")).to("finished"),
        When("orphan", "x.done").to("finished"),
        When("orphan", Timeout("t")).to("finished"),
    ],
)
"""


def sagawire(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAGAWIRE_")}
    return subprocess.run(
        [SAGAWIRE, *args], capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT
    )


@pytest.fixture
def syntax_error(tmp_path: Path) -> str:
    path = tmp_path / "bad.py"
    path.write_text("def broken(:\n")
    return str(path)


@pytest.fixture
def failed_checks(tmp_path: Path) -> str:
    path = tmp_path / "broken.py"
    path.write_text(FAILS_ITS_CHECKS)
    return str(path)


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def _postgres_driver() -> bool:
    try:
        import orchestrator.store.postgres  # noqa: F401
    except ImportError:
        return False
    return True


def run_args(**over: str) -> list[str]:
    opts = {"sagas": ORDER, "broker": "memory://", "store": "memory://", "http": "127.0.0.1:0"}
    opts.update(over)
    return ["run", *(x for k, v in opts.items() for x in (f"--{k}", v))]


def assert_one_line_error(code: int, stderr: str, *needles: str) -> None:
    assert code == 2, stderr
    assert "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("sagawire: error: ")
    for needle in needles:
        assert needle in lines[0]


def test_saga_module_with_a_syntax_error(syntax_error: str) -> None:
    """The real process, default log level: exactly what an operator sees."""
    result = sagawire(*run_args(sagas=syntax_error))
    assert_one_line_error(result.returncode, result.stderr, syntax_error, "SyntaxError")


def test_debug_shows_the_traceback(syntax_error: str) -> None:
    result = sagawire(*run_args(sagas=syntax_error), "--debug")
    assert result.returncode == 2
    assert "Traceback" in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("sagawire: error: ")


def test_options_come_from_the_environment(failed_checks: str) -> None:
    env = {**os.environ, "SAGAWIRE_SAGAS": failed_checks, "SAGAWIRE_STORE": "memory://"}
    result = subprocess.run(
        [SAGAWIRE, "run", "--http", "127.0.0.1:0"],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )
    assert_one_line_error(result.returncode, result.stderr, "saga 'broken'")


# -- in-process (the same code path, faster) ---------------------------------------


def run_error(runner: CliRunner, **over: str) -> tuple[int, str]:
    result = runner.invoke(app, run_args(**over))
    return result.exit_code, result.stderr


def test_saga_that_fails_its_checks(runner: CliRunner, failed_checks: str) -> None:
    code, err = run_error(runner, sagas=failed_checks)
    assert_one_line_error(code, err, "saga 'broken'", "'orphan' is unreachable")


@pytest.mark.parametrize(
    ("option", "url", "needle"),
    [
        ("broker", "foo://somewhere", "unknown broker URL scheme 'foo://'"),
        ("store", "foo://somewhere", "unknown store URL scheme 'foo://'"),
        (
            "store",
            "sqlite:////nonexistent-dir/x.db",
            "store sqlite:////nonexistent-dir/x.db unreachable",
        ),
    ],
)
def test_bad_urls(runner: CliRunner, option: str, url: str, needle: str) -> None:
    assert_one_line_error(*run_error(runner, **{option: url}), needle)


@pytest.mark.skipif(not _postgres_driver(), reason="PostgreSQL store not available")
def test_unreachable_postgres_names_it_without_the_password(runner: CliRunner) -> None:
    code, err = run_error(runner, store="postgresql://app:s3cret@127.0.0.1:1/x")
    assert_one_line_error(code, err, "store postgresql://app:***@127.0.0.1:1/x unreachable")
    assert "s3cret" not in err


def test_busy_http_port(runner: CliRunner, busy_port: int) -> None:
    code, err = run_error(runner, http=f"127.0.0.1:{busy_port}")
    assert_one_line_error(code, err, f"cannot listen on 127.0.0.1:{busy_port}")


def test_malformed_http_address(runner: CliRunner) -> None:
    assert_one_line_error(*run_error(runner, http="nope"), "--http='nope': not HOST:PORT")


def test_bad_gc_setting(runner: CliRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SAGAWIRE_GC", "fast")
    assert_one_line_error(*run_error(runner), "SAGAWIRE_GC='fast'")


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["bench", "--participants", "process"], "--participants process needs a real broker"),
        (["bench", "--participants", "elsewhere"], "--participants 'elsewhere'"),
        (["simulate", "--broker", "memory://"], "simulated services in another process"),
    ],
)
def test_services_elsewhere_need_a_real_broker(
    runner: CliRunner, args: list[str], needle: str
) -> None:
    result = runner.invoke(app, args)
    assert_one_line_error(result.exit_code, result.stderr, needle)


def test_unknown_log_level(runner: CliRunner) -> None:
    result = runner.invoke(app, [*run_args(), "--log-level", "loud"])
    assert_one_line_error(result.exit_code, result.stderr, "unknown log level 'loud'")


# -- in-process commands ------------------------------------------------------------


def test_check_prints_a_summary(runner: CliRunner) -> None:
    result = runner.invoke(app, ["check", "--sagas", ORDER])
    assert result.exit_code == 0, result.output
    assert "order" in result.stdout
    assert "steps" in result.stdout
    assert "1 saga(s) passed" in result.stdout


def test_check_fails_with_exit_2(runner: CliRunner, failed_checks: str) -> None:
    result = runner.invoke(app, ["check", "--sagas", failed_checks])
    assert result.exit_code == 2
    assert "saga 'broken'" in result.stderr


def test_graph_prints_mermaid(runner: CliRunner) -> None:
    result = runner.invoke(app, ["graph", "--sagas", ORDER, "--saga", "order"])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("%% saga order\nstateDiagram-v2\n")
    assert "[*] --> inventory" in result.stdout


def test_graph_of_an_unknown_saga(runner: CliRunner) -> None:
    result = runner.invoke(app, ["graph", "--sagas", ORDER, "--saga", "nope"])
    assert result.exit_code == 2
    assert "no saga named 'nope'" in result.stderr
    assert "loaded: order" in result.stderr


def test_schema_is_the_envelope_json_schema(runner: CliRunner) -> None:
    result = runner.invoke(app, ["schema"])
    assert result.exit_code == 0
    schema = orjson.loads(result.stdout)
    assert "specversion" in schema["properties"]
    assert schema["$schema"].startswith("https://json-schema.org/")


def _stub(monkeypatch: pytest.MonkeyPatch, name: str, func: str, result: Any) -> list[Any]:
    """Stand in for orchestrator.tooling.demo / orchestrator.tooling.bench: the CLI wiring is what's tested."""
    calls: list[Any] = []

    async def fake(*args: Any, **kwargs: Any) -> Any:
        calls.append(args + tuple(sorted(kwargs.items())))
        if name == "bench":  # the real run_bench prints its own JSON line
            print(orjson.dumps(result).decode())
        return result

    module = types.ModuleType(f"orchestrator.tooling.{name}")
    setattr(module, func, fake)
    monkeypatch.setitem(sys.modules, f"orchestrator.tooling.{name}", module)
    return calls


def test_demo_calls_run_demo(runner: CliRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _stub(monkeypatch, "demo", "run_demo", 3)
    result = runner.invoke(app, ["demo", "--orders", "5", "--seed", "7"])
    assert result.exit_code == 3
    orders, seed, store, broker, console = calls[0]
    assert (orders, seed, store, broker) == (5, 7, "sqlite:///sagawire-demo.db", "memory://")
    assert hasattr(console, "print")


def test_bench_prints_one_json_line(runner: CliRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _stub(monkeypatch, "bench", "run_bench", {"sagas_per_s": 1.5})
    args = ["bench", "--store", "memory://", "--sagas", "10", "--concurrency", "2", "--seed", "3"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert calls == [
        ("memory://", "memory://", 10, 2, 3, ("participants", "auto"), ("ring", False))
    ]
    assert result.stdout.splitlines() == ['{"sagas_per_s":1.5}']
    calls.clear()
    assert runner.invoke(app, [*args, "--ring"]).exit_code == 0
    assert calls[0][-1] == ("ring", True)


# -- logging ------------------------------------------------------------------------


def test_json_log_lines_never_carry_secrets(
    runner: CliRunner, capsys: pytest.CaptureFixture[str]
) -> None:
    from orchestrator.sidecar.logs import configure_logging

    configure_logging("info", json=True)
    log = structlog.get_logger("sagawire.engine")
    log.debug("hidden")
    log.info(
        "transition",
        saga="order",
        correlation_id="o-1",
        state="payment",
        broker="amqp://app:s3cret@rabbit:5672/",
    )
    logging.getLogger("uvicorn.error").warning("from %s", "stdlib")
    lines = [orjson.loads(x) for x in capsys.readouterr().err.splitlines()]
    assert [x["event"] for x in lines] == ["transition", "from stdlib"]
    first = lines[0]
    assert list(first)[:4] == ["timestamp", "level", "logger", "event"]
    assert (first["saga"], first["correlation_id"], first["state"]) == ("order", "o-1", "payment")
    assert first["broker"] == "amqp://app:***@rabbit:5672/"


def test_log_level_from_the_environment(
    runner: CliRunner, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from orchestrator.sidecar.logs import configure_logging

    monkeypatch.setenv("SAGAWIRE_LOG_LEVEL", "debug")
    configure_logging(json=True)
    structlog.get_logger("t").debug("shown")
    assert orjson.loads(capsys.readouterr().err)["event"] == "shown"
