"""The saga authors' commands: ``validate``, ``graph``, ``schemas`` and ``inspect``.

Broken saga modules are written into the test's own directory; the AsyncAPI document
is validated against the official AsyncAPI 3.0 JSON Schema, vendored in
``tests/data/`` (see ``tests/data/README.md`` for its source and version).
"""

from __future__ import annotations

import re
import textwrap
from pathlib import Path
from typing import Any

import jsonschema
import orjson
import pytest
from typer.testing import CliRunner

from adapters.base import OutgoingMessage
from adapters.memory import MemoryBroker, MemoryTransport
from orchestrator.cli import app
from orchestrator.engine import Engine
from orchestrator.engine.clock import VirtualClock
from orchestrator.errors import DefinitionError
from orchestrator.language.graph import live_rows
from orchestrator.language.loader import collect_sagas, load_sagas
from orchestrator.store import open_store
from sagas.order import order
from schemas.codec import encode
from schemas.envelope import Envelope

ROOT = Path(__file__).resolve().parents[2]
SAGAS = str(ROOT / "sagas")
ORDER = str(ROOT / "sagas" / "order.py")
ASYNCAPI_SCHEMA = ROOT / "tests" / "data" / "asyncapi-3.0.0.schema.json"
WIDE = {"COLUMNS": "240"}  # rich tables unfolded, so lines can be searched

HEADER = """\
from pydantic import BaseModel
from orchestrator import Event, Send, StateMachine, Step, StepSaga, Timeout, When

class S(BaseModel):
    id: str
"""

BROKEN_MACHINE = """
{name} = StateMachine(
    "{name}",
    state=S,
    events=[Event("{name}.started", S, correlate="id"), Event("{name}.done", S)],
    start="{name}.started",
    final={{"finished": "completed"}},
    transitions=[
        When("initial", "{name}.started").timer("t", 5).to("waiting"),
        When("waiting", "{name}.done").to("finished"),
        When("waiting", Timeout("t")).to("finished"),
        When("orphan", Timeout("t")).to("finished"),
    ],
)
"""


def module(tmp_path: Path, name: str, body: str) -> Path:
    path = tmp_path / f"{name}.py"
    path.write_text(HEADER + textwrap.dedent(body))
    return path


def line_of(path: Path, needle: str) -> int:
    """The 1-based line of ``path`` where ``needle`` first appears."""
    for n, text in enumerate(path.read_text().splitlines(), 1):
        if needle in text:
            return n
    raise AssertionError(f"{needle!r} not in {path}")


def validate(runner: CliRunner, *args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, ["validate", *args], env=WIDE)
    return result.exit_code, result.stdout, result.stderr


# -- validate ---------------------------------------------------------------------------


def test_the_shipped_sagas_validate_clean(runner: CliRunner) -> None:
    code, out, err = validate(runner, SAGAS)
    assert code == 0, err
    assert err == ""
    assert "ok: 3 saga(s) passed their checks" in out
    for name in ("order", "checkout", "trip"):
        assert re.search(rf"│ {name}\s+│", out)


def test_several_paths_and_a_dotted_module(runner: CliRunner) -> None:
    code, out, err = validate(runner, ORDER, "sagas.trip")
    assert code == 0, err
    assert "ok: 2 saga(s) passed" in out


def test_check_is_a_hidden_alias_of_validate(runner: CliRunner) -> None:
    result = runner.invoke(app, ["check", "--sagas", ORDER], env=WIDE)
    assert result.exit_code == 0, result.output
    assert "1 saga(s) passed" in result.stdout
    listing = runner.invoke(app, ["--help"], env=WIDE).stdout
    assert "validate" in listing
    assert not re.search(r"│ check\s", listing)


@pytest.mark.parametrize(
    ("target", "needle"),
    [
        (
            "/nonexistent/dir/x.py",
            "/nonexistent/dir/x.py: error: saga file /nonexistent/dir/x.py does not exist",
        ),
        (
            "no_such.module",
            "no_such.module: error: no saga file, directory or module named 'no_such.module'",
        ),
    ],
)
def test_a_missing_path(runner: CliRunner, target: str, needle: str) -> None:
    code, _, err = validate(runner, target)
    assert code == 2
    assert needle in err
    assert "Traceback" not in err


def test_a_module_with_a_syntax_error_and_the_others_still_checked(
    runner: CliRunner, tmp_path: Path
) -> None:
    (tmp_path / "bad.py").write_text("x = 1\ndef broken(:\n")
    module(tmp_path, "fine", "")  # declares nothing: reported as such, not hidden
    code, out, err = validate(runner, str(tmp_path / "bad.py"), ORDER)
    assert code == 2
    assert f"{tmp_path / 'bad.py'}:2: error: SyntaxError" in err
    assert "Traceback" not in err
    assert "│ order" in out  # the good module beside it was loaded and checked


def test_two_broken_modules_are_both_reported_with_file_and_line(
    runner: CliRunner, tmp_path: Path
) -> None:
    a = module(tmp_path, "a", BROKEN_MACHINE.format(name="alpha"))
    b = module(tmp_path, "b", BROKEN_MACHINE.format(name="beta"))
    code, _, err = validate(runner, str(tmp_path))
    assert code == 2
    for path, name in ((a, "alpha"), (b, "beta")):
        line = line_of(path, f"{name} = StateMachine(")
        assert f"{path}:{line}: error: saga {name!r}: state 'orphan' is unreachable" in err
    assert "2 failed" in err


def test_every_broken_saga_of_one_module_is_reported(runner: CliRunner, tmp_path: Path) -> None:
    path = module(
        tmp_path, "both", BROKEN_MACHINE.format(name="one") + BROKEN_MACHINE.format(name="two")
    )
    code, _, err = validate(runner, str(path))
    assert code == 2
    assert f"{path}:{line_of(path, 'one = StateMachine(')}: error: saga 'one'" in err
    assert f"{path}:{line_of(path, 'two = StateMachine(')}: error: saga 'two'" in err


def test_a_module_that_failed_validation_is_not_left_loaded(tmp_path: Path) -> None:
    path = module(tmp_path, "left", BROKEN_MACHINE.format(name="left"))
    report = collect_sagas([str(path)])
    assert [d.ok for d in report.declared] == [False]
    with pytest.raises(DefinitionError, match="'orphan' is unreachable"):
        load_sagas(str(path))  # the sidecar still refuses it


def test_a_broken_module_imported_by_another_is_checked_the_ordinary_way(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    package = tmp_path / "shared_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    broken = module(package, "broken", BROKEN_MACHINE.format(name="shared"))
    monkeypatch.syspath_prepend(str(tmp_path))
    user = module(tmp_path, "user", "import shared_pkg.broken\n")
    code, _, err = validate(runner, str(user))
    assert code == 2
    line = line_of(user, "import shared_pkg.broken")
    assert f"{user}:{line}: error: saga 'shared': state 'orphan' is unreachable" in err
    assert "shared_pkg.broken" not in sys.modules  # not cached broken for later imports
    assert broken.exists()


def test_a_step_saga_that_fails_before_compiling_is_reported_at_its_line(
    runner: CliRunner, tmp_path: Path
) -> None:
    path = module(
        tmp_path,
        "steps",
        """
        job = StepSaga(
            "job",
            state=S,
            start=Event("job.started", S),
            correlate="id",
            steps=[Step("work", send=Send("work.do", S), success=Event("work.done", S))],
        )
        """,
    )
    code, _, err = validate(runner, str(path))
    assert code == 2
    line = line_of(path, "job = StepSaga(")
    assert f"{path}:{line}: error: saga 'job': step 'work' has no failure path" in err
    assert f"{path}:{line}: error: saga 'job': step 'work' waits with no timeout" in err


def test_a_typo_in_correlate_is_an_error_at_its_event(runner: CliRunner, tmp_path: Path) -> None:
    path = module(
        tmp_path,
        "typo",
        """
        class Done(BaseModel):
            order_id: str

        typo = StateMachine(
            "typo",
            state=S,
            events=[
                Event("typo.started", S, correlate="id"),
                Event("typo.done", Done, correlate="ordr_id"),
            ],
            start="typo.started",
            final={"finished": "completed"},
            transitions=[
                When("initial", "typo.started").timer("t", 5).to("waiting"),
                When("waiting", "typo.done").to("finished"),
                When("waiting", Timeout("t")).to("finished"),
            ],
        )
        """,
    )
    code, _, err = validate(runner, str(path))
    assert code == 2
    line = line_of(path, 'correlate="ordr_id"')
    assert (
        f"{path}:{line}: error: saga 'typo': event 'typo.done' is correlated by data.ordr_id"
        " (correlate='ordr_id'), but Done has no field 'ordr_id' (its fields: order_id;"
        " did you mean 'order_id'?)"
    ) in err
    assert "dead-lettered" in err
    assert "1 saga(s) passed" in err  # it loads: only the contract check finds it


def test_a_typo_in_the_sagas_correlate_is_reported_for_each_event(
    runner: CliRunner, tmp_path: Path
) -> None:
    path = module(
        tmp_path,
        "steps",
        """
        job = StepSaga(
            "job",
            state=S,
            start=Event("job.started", S),
            correlate="idd",
            steps=[Step("work", send=Send("work.do", S), success=Event("work.done", S),
                        timeout=5)],
        )
        """,
    )
    code, _, err = validate(runner, str(path))
    assert code == 2
    line = line_of(path, 'correlate="idd"')
    for event in ("job.started", "work.done"):
        assert f"{path}:{line}: error: saga 'job': event {event!r} is correlated by data.idd" in err


def test_a_row_event_that_is_misspelt_says_did_you_mean(runner: CliRunner, tmp_path: Path) -> None:
    path = module(
        tmp_path,
        "rows",
        BROKEN_MACHINE.format(name="rows").replace(
            'When("waiting", "rows.done")', 'When("waiting", "rows.dnoe")'
        ),
    )
    code, _, err = validate(runner, str(path))
    assert code == 2
    assert "accepts event 'rows.dnoe', which has no correlation" in err
    assert "did you mean 'rows.done'?" in err


def test_a_name_one_typo_from_another_is_a_warning(runner: CliRunner, tmp_path: Path) -> None:
    path = module(
        tmp_path,
        "billing",
        """
        billing = StepSaga(
            "billing",
            state=S,
            start=Event("invoice.sent", S),
            correlate="id",
            steps=[Step("pay", send=Send("payment.charge", S),
                        success=Event("payment.chargd", S), timeout=5)],
        )
        """,
    )
    code, out, err = validate(runner, ORDER, str(path))
    assert code == 0, err
    line = line_of(path, 'Event("payment.chargd"')
    assert (
        f"{path}:{line}: warning: saga 'billing': event 'payment.chargd' is one typo away"
        " from event 'payment.charged' (saga 'order'): did you mean 'payment.charged'?"
    ) in err
    assert "1 warning(s)" in out
    # a command and its reply (payment.charge / payment.charged) are no typo
    assert "'payment.charge'" not in err
    code, _, err = validate(runner, ORDER, str(path), "--strict")
    assert code == 2
    assert "0 error(s), 1 warning(s)" in err


def test_an_event_declared_and_never_used_is_a_warning(runner: CliRunner, tmp_path: Path) -> None:
    path = module(
        tmp_path,
        "spare",
        """
        spare = StateMachine(
            "spare",
            state=S,
            events=[
                Event("spare.started", S, correlate="id"),
                Event("spare.done", S),
                Event("spare.extra", S),
            ],
            start="spare.started",
            final={"finished": "completed"},
            transitions=[
                When("initial", "spare.started").timer("t", 5).to("waiting"),
                When("waiting", "spare.done").to("finished"),
                When("waiting", Timeout("t")).to("finished"),
            ],
        )
        """,
    )
    code, out, err = validate(runner, str(path))
    assert code == 0, err
    line = line_of(path, 'Event("spare.extra"')
    assert (
        f"{path}:{line}: warning: saga 'spare': event 'spare.extra' is declared but no row takes it"
    ) in err
    assert "parked, then dead-lettered" in err
    assert validate(runner, str(path), "--strict")[0] == 2


def test_two_sagas_of_one_name(runner: CliRunner, tmp_path: Path) -> None:
    (tmp_path / "copy.py").write_text((ROOT / "sagas" / "order.py").read_text())
    code, _, err = validate(runner, ORDER, str(tmp_path / "copy.py"))
    assert code == 2
    assert f"saga 'order': the saga name is already taken by {ORDER}:" in err


# -- graph ------------------------------------------------------------------------------


def test_graph_names_states_as_the_api_does(runner: CliRunner) -> None:
    result = runner.invoke(app, ["graph", ORDER])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("%% saga order\nstateDiagram-v2\n")
    assert 'state "compensating:inventory" as compensating__inventory' in result.stdout
    assert "[*] --> inventory: order.placed / inventory.reserve" in result.stdout


def test_a_step_without_retry_draws_no_retry_edges(tmp_path: Path) -> None:
    path = module(
        tmp_path,
        "once",
        """
        once = StepSaga(
            "once",
            state=S,
            start=Event("once.started", S),
            correlate="id",
            steps=[
                Step("a", send=Send("a.do", S), success=Event("a.done", S),
                     compensate=Send("a.undo", S), compensated_by=Event("a.undone", S),
                     timeout=5),
                Step("b", send=Send("b.do", S), success=Event("b.done", S), timeout=5),
            ],
        )
        """,
    )
    (once,) = load_sagas(str(path))
    mermaid = once.to_mermaid()
    assert ".retry" not in mermaid
    assert "attempts < 1" not in mermaid
    assert "a --> compensated: timer:a.timeout [attempts = 1]" in mermaid
    assert "b --> compensating__a: timer:b.timeout [attempts = 1] / a.undo" in mermaid
    # the rows are still there for the engine; only the drawing leaves out what cannot fire
    assert any(t.event == "timer:a.retry" for rows in once.transitions.values() for t in rows)
    assert not any(t.event.endswith(".retry") for t in live_rows(once))
    # with retries, the retry edges are drawn
    assert (
        "inventory --> inventory: timer:inventory.retry / inventory.reserve" in order.to_mermaid()
    )


DOT_NODE = re.compile(r'^    "((?:[^"\\]|\\.)*)" \[(.*)\];$')
DOT_EDGE = re.compile(r'^    "((?:[^"\\]|\\.)*)" -> "((?:[^"\\]|\\.)*)"(?: \[(.*)\])?;$')
DOT_ATTRS = re.compile(r'^(\w+="(?:[^"\\]|\\.)*")(, \w+="(?:[^"\\]|\\.)*")*$')


def parse_dot(text: str) -> dict[str, tuple[set[str], list[tuple[str, str]]]]:
    """A structural reading of the DOT we write: each graph's nodes and edges, every
    line a statement of the grammar, every edge between declared nodes."""
    graphs: dict[str, tuple[set[str], list[tuple[str, str]]]] = {}
    current: str | None = None
    for line in text.splitlines():
        if not line.strip():
            assert current is None
            continue
        if current is None:
            header = re.fullmatch(r'digraph "([^"]+)" \{', line)
            assert header, line
            current = header.group(1)
            graphs[current] = (set(), [])
            continue
        if line == "}":
            current = None
            continue
        nodes, edges = graphs[current]
        if re.fullmatch(r"    (rankdir=LR|(node|edge) \[.*\]);", line):
            continue
        if m := DOT_EDGE.match(line):
            assert m.group(3) is None or DOT_ATTRS.match(m.group(3)), line
            edges.append((m.group(1), m.group(2)))
        elif m := DOT_NODE.match(line):
            assert DOT_ATTRS.match(m.group(2)), line
            nodes.add(m.group(1))
        else:
            raise AssertionError(f"not a DOT statement: {line!r}")
    assert current is None, "a graph was not closed"
    for nodes, edges in graphs.values():
        for src, dst in edges:
            assert src in nodes and dst in nodes, (src, dst)
    return graphs


def test_graph_as_dot(runner: CliRunner) -> None:
    result = runner.invoke(app, ["graph", SAGAS, "--format", "dot"])
    assert result.exit_code == 0, result.output
    graphs = parse_dot(result.stdout)
    assert set(graphs) == {"order", "checkout", "trip"}
    nodes, edges = graphs["order"]
    assert {"inventory", "compensating:inventory", "completed", "compensated"} <= nodes
    assert ("payment", "compensating:inventory") in edges
    nodes, edges = graphs["checkout"]
    assert ("step_inventory", "step_payment") in edges


def test_dot_escapes_what_would_break_it() -> None:
    from orchestrator.language.graph import _quote

    assert _quote('a "b" \\ c\nd') == '"a \\"b\\" \\\\ c\\nd"'


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["graph", ORDER, "--format", "svg"], "--format 'svg' is not one of: mermaid, dot"),
        (["graph", ORDER, "--saga", "nope"], "no saga named 'nope'"),
        (["graph", "/nonexistent.py"], "saga file /nonexistent.py does not exist"),
    ],
)
def test_graph_errors(runner: CliRunner, args: list[str], needle: str) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert result.stderr.startswith("sagawire: error: ")
    assert needle in result.stderr


def test_graph_keeps_its_old_option(runner: CliRunner) -> None:
    result = runner.invoke(app, ["graph", "--sagas", ORDER, "--saga", "order"])
    assert result.exit_code == 0, result.output
    assert "[*] --> inventory" in result.stdout


# -- schemas ----------------------------------------------------------------------------


def refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [r for v in node.values() for r in refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in refs(v)]
    return []


def resolve(doc: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = doc
    for part in ref[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


@pytest.fixture(scope="module")
def asyncapi_validator() -> jsonschema.Draft7Validator:
    schema = orjson.loads(ASYNCAPI_SCHEMA.read_bytes())
    assert schema["properties"]["asyncapi"]["const"] == "3.0.0"
    return jsonschema.Draft7Validator(schema)


def test_schemas_writes_a_valid_asyncapi_document(
    runner: CliRunner, tmp_path: Path, asyncapi_validator: jsonschema.Draft7Validator
) -> None:
    out = tmp_path / "contract"
    result = runner.invoke(app, ["schemas", SAGAS, "--out", str(out)])
    assert result.exit_code == 0, result.output
    doc = orjson.loads((out / "asyncapi.json").read_bytes())
    errors = [f"{list(e.path)}: {e.message}" for e in asyncapi_validator.iter_errors(doc)]
    assert errors == []
    for ref in refs(doc):  # the spec's schema checks their form; here, that they resolve
        resolve(doc, ref)
    assert set(doc["servers"]) == {"kafka", "nats", "amqp"}
    # every channel the sagas consume and produce, on each broker
    types = {t for s in load_sagas(SAGAS) for t in (*s.consumes(), *s.produces())}
    assert {c["address"] for c in doc["channels"].values()} == types
    assert len(doc["channels"]) == 3 * len(types)
    placed = doc["operations"]["nats.receive.order.placed"]
    assert placed["action"] == "receive"
    assert placed["channel"] == {"$ref": "#/channels/nats.order.placed"}
    assert doc["operations"]["kafka.send.inventory.reserve"]["action"] == "send"
    assert "kafka.receive.inventory.reserve" not in doc["operations"]
    reserve = doc["components"]["messages"]["inventory.reserve"]
    data = reserve["payload"]["allOf"][1]["properties"]["data"]
    assert data == {"$ref": "#/components/schemas/ReserveInventory"}
    assert reserve["correlationId"]["location"] == "$message.payload#/correlationid"


def test_the_validator_does_refuse_a_broken_document(
    asyncapi_validator: jsonschema.Draft7Validator,
) -> None:
    from orchestrator.language.contract import asyncapi
    from orchestrator.sidecar.channels import DEFAULT_BROKERS, server_for

    doc = asyncapi([order], [server_for(u) for u in DEFAULT_BROKERS])
    assert asyncapi_validator.is_valid(doc)
    doc["operations"]["kafka.receive.order.placed"]["action"] = "publish"  # AsyncAPI 2's word
    assert not asyncapi_validator.is_valid(doc)
    del doc["info"]
    assert not asyncapi_validator.is_valid(doc)


def test_schemas_use_the_real_addresses_of_each_broker(
    runner: CliRunner, tmp_path: Path, asyncapi_validator: jsonschema.Draft7Validator
) -> None:
    brokers = [
        "kafka://k1:9092,k2:9092?topic_prefix=prod.&partitions=6",
        "nats://n1:4222?subject_prefix=eu&stream=ORDERS",
        "amqp://app:s3cret@rabbit:5672/shop?exchange=orders",
    ]
    args = ["schemas", ORDER, "--out", str(tmp_path), "--group", "billing"]
    args += [x for b in brokers for x in ("--broker", b)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    raw = (tmp_path / "asyncapi.json").read_text()
    assert "s3cret" not in raw
    doc = orjson.loads(raw)
    assert asyncapi_validator.is_valid(doc)
    channels = doc["channels"]
    assert channels["kafka.order.placed"]["address"] == "prod.order.placed"
    assert channels["kafka.order.placed"]["bindings"]["kafka"]["partitions"] == 6
    assert channels["nats.order.placed"]["address"] == "eu.order.placed"
    assert channels["amqp.order.placed"]["address"] == "order.placed"
    exchange = channels["amqp.order.placed"]["bindings"]["amqp"]["exchange"]
    assert (exchange["name"], exchange["type"], exchange["vhost"]) == ("orders", "topic", "shop")
    assert doc["servers"]["amqp"] == {
        "host": "rabbit:5672",
        "protocol": "amqp",
        "pathname": "/shop",
        "description": doc["servers"]["amqp"]["description"],
    }
    assert "'orders.billing'" not in doc["servers"]["amqp"]["description"]
    assert "'sagawire.billing'" in doc["servers"]["amqp"]["description"]  # queue_prefix.group
    assert "'ORDERS'" in doc["servers"]["nats"]["description"]
    group = doc["operations"]["kafka.receive.order.placed"]["bindings"]["kafka"]["groupId"]
    assert group == {"type": "string", "enum": ["billing"]}


def test_schemas_of_each_payload_and_the_envelope(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(app, ["schemas", ORDER, "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    names = {p.name for p in tmp_path.iterdir()}
    assert {"asyncapi.json", "envelope.schema.json"} <= names
    assert {f"{t}.schema.json" for t in (*order.consumes(), *order.produces())} <= names
    placed = orjson.loads((tmp_path / "order.placed.schema.json").read_bytes())
    assert placed["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    check = jsonschema.Draft202012Validator(placed)
    good = {
        "order_id": "o-1",
        "customer_id": "c",
        "items": [{"sku": "A", "qty": 1}],
        "amount_cents": 5,
    }
    assert check.is_valid(good)
    assert not check.is_valid({**good, "items": [{"sku": "A", "qty": 0}]})  # qty > 0
    envelope = orjson.loads((tmp_path / "envelope.schema.json").read_bytes())
    assert "specversion" in envelope["properties"]


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--broker", "redis://x"], "--broker 'redis://'"),
        (["--broker", "kafka://k:9092?topic_prefx=a"], "topic_prefx"),
        (
            ["--broker", "nats://a:4222", "--broker", "nats://b:4222"],
            "at most one --broker of each kind",
        ),
    ],
)
def test_schemas_refuse_bad_brokers(
    runner: CliRunner, tmp_path: Path, extra: list[str], needle: str
) -> None:
    result = runner.invoke(app, ["schemas", ORDER, "--out", str(tmp_path / "out"), *extra])
    assert result.exit_code == 2
    assert result.stderr.startswith("sagawire: error: ")
    assert needle in result.stderr
    assert not (tmp_path / "out").exists()


def test_schemas_into_a_file_is_an_error(runner: CliRunner, tmp_path: Path) -> None:
    target = tmp_path / "taken"
    target.write_text("")
    result = runner.invoke(app, ["schemas", ORDER, "--out", str(target)])
    assert result.exit_code == 2
    assert f"--out {target} is a file" in result.stderr


def test_the_old_schema_command_prints_the_envelope(runner: CliRunner) -> None:
    result = runner.invoke(app, ["schema"])
    assert result.exit_code == 0
    assert "correlationid" in orjson.loads(result.stdout)["properties"]


# -- inspect ----------------------------------------------------------------------------

PLACED = {
    "order_id": "o-1",
    "customer_id": "c",
    "items": [{"sku": "A", "qty": 1}],
    "amount_cents": 10,
}


async def run_order(db: Path) -> None:
    """One order, placed, reserved and declined, on a SQLite store: left compensating."""
    store = open_store(f"sqlite:///{db}")
    await store.open()
    broker = MemoryBroker()
    transport = MemoryTransport(broker)
    await transport.start()
    engine = Engine([order], store, transport, clock=VirtualClock(1_767_225_600.0))
    await engine.prepare()
    events = [
        ("order.placed", PLACED),
        ("inventory.reserved", {"order_id": "o-1", "reservation_id": "r-1"}),
        ("payment.declined", {"order_id": "o-1", "reason": "card expired"}),
    ]
    for n, (type, data) in enumerate(events):
        env = Envelope.new(type, data, id=f"e-{n}", source="test", correlationid="o-1")
        await transport.publish([OutgoingMessage(type, encode(env), env.id, "o-1")])
        await engine.handle(transport.poll(engine.topology))
    await transport.close()
    await store.close()


@pytest.fixture
async def order_db(tmp_path: Path) -> Path:
    db = tmp_path / "sagawire.db"
    await run_order(db)
    return db


def test_inspect_shows_one_instance(runner: CliRunner, order_db: Path) -> None:
    url = f"sqlite:///{order_db}"
    result = runner.invoke(app, ["inspect", "order", "o-1", "--store", url], env=WIDE)
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "saga 'order', instance 'o-1'" in out
    assert re.search(r"state\s+compensating:inventory", out)
    assert re.search(r"status\s+running", out)
    assert re.search(r"version\s+3", out)
    assert re.search(r"created\s+2026-01-01T00:00:00\.000\+00:00", out)
    assert re.search(r"failure\s+card expired", out)
    assert "history (3 entries)" in out
    for type in ("order.placed", "inventory.reserved", "payment.declined"):
        assert type in out
    assert "payment -> compensating:inventory" in out
    assert "inventory.release" in out  # what the last step sent
    assert '"reservation_id": "r-1"' in out


def test_inspect_with_the_sagas_checks_the_name(runner: CliRunner, order_db: Path) -> None:
    url = f"sqlite:///{order_db}"
    ok = runner.invoke(app, ["inspect", "order", "o-1", "--store", url, "--sagas", ORDER], env=WIDE)
    assert ok.exit_code == 0, ok.output
    bad = runner.invoke(app, ["inspect", "ordre", "o-1", "--store", url, "--sagas", ORDER])
    assert bad.exit_code == 2
    assert "no saga named 'ordre'" in bad.stderr and "loaded: order" in bad.stderr


def test_inspect_of_an_unknown_instance(runner: CliRunner, order_db: Path) -> None:
    url = f"sqlite:///{order_db}"
    result = runner.invoke(app, ["inspect", "order", "o-404", "--store", url])
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        f"sagawire: error: no instance 'o-404' of saga 'order' in store {url}"
    )


@pytest.mark.parametrize("url", ["sqlite:///{tmp}/missing.db", "memory://", "foo://x"])
def test_inspect_refuses_a_store_with_nothing_to_read(
    runner: CliRunner, tmp_path: Path, url: str
) -> None:
    result = runner.invoke(app, ["inspect", "order", "o-1", "--store", url.format(tmp=tmp_path)])
    assert result.exit_code == 2
    assert result.stderr.startswith("sagawire: error: ")
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "missing.db").exists()  # read-only: no empty database made
