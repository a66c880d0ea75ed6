"""Scale-out bench: N ``sagawire run`` replicas against one broker and one PostgreSQL.

    .venv/bin/python scripts/bench_replicas.py [--broker kafka|nats|rabbitmq|all]
        [--replicas 1,2,4] [--quota 0.25] [--in-flight 200] [--seconds 30] [--warmup 5]
        [--partitions 4] [--store postgresql://postgres@127.0.0.1:5432]

Issue 19 asks whether a second and a fourth replica add throughput. Per (broker, N)
this starts, from nothing:

* a fresh PostgreSQL database (dropped after) and a private namespace on the broker
  (Kafka: a throw-away Tansu broker, as the tests start one, with ``--partitions``
  partitions per topic; NATS: a stream and subject prefix of its own; RabbitMQ: an
  exchange and queue prefix of its own; both deleted after);
* N ``sagawire run`` processes with the shipped order saga in one consumer group, each
  held to ``--quota`` cores (a cgroup of its own: :class:`Cgroup`), so that the sidecars
  and not the machine are the bottleneck;
* the simulated services in a ``sagawire simulate --fast`` child and the order driver
  in this process, neither under the quota: a closed loop that keeps ``--in-flight``
  orders placed and places a new one for each ``order.completed`` it hears.

After ``--warmup`` seconds, and once every replica is taking deliveries (a Kafka group
settles after its last join), the loop is timed for ``--seconds``: completions per
second, latency from publishing ``order.placed`` to hearing ``order.completed`` (one hop
more than the engine's own commit, the same for every N), and from each replica's
``/metrics`` over the same window the deliveries and the version conflicts
(``sagawire_conflicts_total``), plus the CPU each replica used (and per saga) and
how often its quota throttled it. One ``key=value`` line per run; ``vs_1`` is sagas/s
over the N=1 run of the same invocation.

Without cgroups (no writable cgroup v1 ``cpu`` controller or v2 ``cpu.max``) each
sidecar is pinned to one core (``sched_setaffinity``) instead, and the script says the
figures are then not quota-bound; ``--quota 0`` sets no limit at all.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import signal
import sys
import tempfile
import time
import uuid
from array import array
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
import orjson
from prometheus_client.parser import text_string_to_metric_families

from adapters import open_transport
from adapters.base import Topology, Transport, close_stream
from orchestrator.sidecar.logs import configure_logging
from orchestrator.tooling.bench import percentile
from orchestrator.tooling.bench_cpu import machine_busy_s
from orchestrator.tooling.bench_services import ChildServices
from orchestrator.tooling.participants import order_placed
from schemas.errors import SagawireError
from tests.e2e.sidecar import Sidecar

BROKERS = ("kafka", "nats", "rabbitmq")
GROUP = "sagawire-replicas"  # the replicas' consumer group
DRIVER_GROUP = "sagawire-replicas-driver"  # the driver's, hearing the outcomes
SERVICE_GROUPS = ("sim-inventory", "sim-payment", "sim-shipping")
OUTCOMES = ("order.completed", "order.cancelled")
PERIOD_US = 100_000  # the CFS period the quota is a share of
END_GRACE = 5.0  # seconds a cancelled task or a closing transport gets before we go on
SETTLE_TIMEOUT = 60.0  # longest the warm-up waits for every replica to take deliveries
MAX_BATCH = 256


class BenchError(Exception):
    """A run could not be made (a service missing, a sidecar that did not start): one
    line for the user, not a traceback."""


# -- holding each sidecar to a CPU quota ---------------------------------------------------


class Cgroup:
    """One cgroup per sidecar under a writable ``cpu`` controller, removed after.

    v1 (``/sys/fs/cgroup/cpu``): ``cpu.cfs_period_us`` and ``cpu.cfs_quota_us``; v2
    (``/sys/fs/cgroup`` listing ``cpu`` in ``cgroup.controllers``): ``cpu.max``. Writing
    the pid to ``cgroup.procs`` moves every thread of the process, and the threads it
    starts later are born there."""

    def __init__(self, root: Path, version: int, cores: float) -> None:
        self.root = root
        self.version = version
        self.quota_us = max(1000, round(cores * PERIOD_US))  # the kernel's minimum is 1 ms
        self.tag = uuid.uuid4().hex[:6]
        self.dirs: list[Path] = []

    @property
    def describe(self) -> str:
        return f"cgroup v{self.version} cpu quota under {self.root}"

    @classmethod
    def find(cls, cores: float) -> Cgroup | None:
        """The cgroup hierarchy this machine lets us write to, tried with a probe."""
        v2 = Path("/sys/fs/cgroup")
        controllers = v2 / "cgroup.controllers"
        if controllers.exists() and "cpu" in controllers.read_text().split():
            candidates = [cls(v2, 2, cores)]
        else:
            candidates = [cls(Path("/sys/fs/cgroup/cpu"), 1, cores)]
        for cgroup in candidates:
            try:
                cgroup.hold_dir("probe")
                return cgroup
            except OSError:
                continue
            finally:
                cgroup.release()
        return None

    def hold_dir(self, name: str) -> Path:
        """A new child cgroup with the quota set."""
        if self.version == 2:
            control = self.root / "cgroup.subtree_control"
            if "cpu" not in control.read_text().split():
                control.write_text("+cpu")
        path = self.root / f"sagawire-bench-{self.tag}-{name}"
        path.mkdir()
        self.dirs.append(path)
        if self.version == 2:
            (path / "cpu.max").write_text(f"{self.quota_us} {PERIOD_US}")
        else:
            (path / "cpu.cfs_period_us").write_text(str(PERIOD_US))
            (path / "cpu.cfs_quota_us").write_text(str(self.quota_us))
        return path

    def hold(self, pid: int, index: int) -> None:
        (self.hold_dir(str(index)) / "cgroup.procs").write_text(str(pid))

    def throttling(self, index: int) -> tuple[int, int] | None:
        """``(periods, throttled periods)`` of sidecar ``index`` so far."""
        try:
            text = (self.dirs[index] / "cpu.stat").read_text()
        except (OSError, IndexError):
            return None
        stat = dict(line.split() for line in text.splitlines() if line.count(" ") == 1)
        return int(stat.get("nr_periods", 0)), int(stat.get("nr_throttled", 0))

    def release(self) -> None:
        """Move whatever is left (a sidecar that would not stop) back to the root, and
        remove the cgroups."""
        for path in self.dirs:
            with contextlib.suppress(OSError):
                for pid in (path / "cgroup.procs").read_text().split():
                    (self.root / "cgroup.procs").write_text(pid)
            with contextlib.suppress(OSError):
                path.rmdir()
        self.dirs.clear()


class Affinity:
    """Without cgroups: each sidecar pinned to one core, round robin. That bounds a
    sidecar to a whole core, not to the quota, and two of them may share one."""

    describe = "sched_setaffinity (one core per sidecar; NOT quota-bound)"

    def __init__(self) -> None:
        self.cpus = sorted(os.sched_getaffinity(0))

    def hold(self, pid: int, index: int) -> None:
        os.sched_setaffinity(pid, {self.cpus[index % len(self.cpus)]})

    def throttling(self, index: int) -> tuple[int, int] | None:
        return None

    def release(self) -> None:
        pass


class Unlimited:
    """``--quota 0``: the sidecars share the machine as they please."""

    describe = "none (--quota 0)"

    def hold(self, pid: int, index: int) -> None:
        pass

    def throttling(self, index: int) -> tuple[int, int] | None:
        return None

    def release(self) -> None:
        pass


Limit = Cgroup | Affinity | Unlimited


def choose_limit(cores: float) -> Limit:
    if cores == 0:
        return Unlimited()
    cgroup = Cgroup.find(cores)
    if cgroup is not None:
        return cgroup
    if hasattr(os, "sched_setaffinity"):
        print(
            "# no writable cgroup cpu controller (v1 /sys/fs/cgroup/cpu or v2 cpu.max):"
            " pinning each sidecar to one core instead; the figures are NOT bound by"
            f" the {cores:g}-core quota",
            file=sys.stderr,
        )
        return Affinity()
    print("# no cgroups and no sched_setaffinity: the sidecars run unlimited", file=sys.stderr)
    return Unlimited()


def process_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of ``pid`` (all its threads) from ``/proc``."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


# -- the broker's namespace and the database of one run ------------------------------------


@dataclass
class Namespace:
    url: str
    note: str
    cleanup: Callable[[], Awaitable[None]]


def _unit_queues(prefix: str, own_partitions: int) -> list[str]:
    """The queues partitioned mode declares for the replicas' group (RabbitMQ)."""
    from orchestrator.engine.correlate import Router
    from orchestrator.engine.partitioning import plan_units
    from orchestrator.language.loader import load_sagas
    from tests.e2e.sidecar import ORDER_SAGA

    if not own_partitions:
        return []
    consumes = Router(load_sagas(str(ORDER_SAGA))).consumes()
    units = plan_units(Topology(consumes, group=GROUP), own_partitions)
    return [f"{prefix}.{u.topology.group}" for u in units]


async def open_namespace(
    broker: str, partitions: int, nats_server: str, own_partitions: int = 0
) -> Namespace:
    tag = uuid.uuid4().hex[:6]
    if broker == "kafka":
        from tests.support.kafka import TansuUnavailable, start_tansu

        try:
            tansu = start_tansu()
        except TansuUnavailable as err:
            raise BenchError(f"kafka: {err}") from None

        async def stop_tansu() -> None:
            tansu.stop()

        note = f"Tansu on 127.0.0.1:{tansu.port}, {partitions} partitions per topic"
        return Namespace(f"{tansu.url}&partitions={partitions}", note, stop_tansu)
    if broker == "nats":
        import nats

        stream = f"SWREP{tag}"

        async def drop_stream() -> None:
            nc = await nats.connect(f"nats://{nats_server}")
            with contextlib.suppress(Exception):
                await nc.jetstream().delete_stream(stream)
            await nc.close()

        url = f"nats://{nats_server}?stream={stream}&subject_prefix=swr{tag}"
        return Namespace(url, f"stream {stream} on {nats_server}", drop_stream)
    import aio_pika

    exchange, prefix = f"swrep{tag}", f"swr{tag}"

    async def drop_queues() -> None:
        conn = await aio_pika.connect("amqp://guest:guest@127.0.0.1:5672/")
        queues = [f"{prefix}.{g}" for g in (GROUP, DRIVER_GROUP, *SERVICE_GROUPS)]
        queues += _unit_queues(prefix, own_partitions)
        for queue in [*queues, f"{exchange}.deadletter"]:
            channel = await conn.channel()  # a failed delete closes its channel
            with contextlib.suppress(Exception):
                await channel.queue_delete(queue)
        channel = await conn.channel()
        with contextlib.suppress(Exception):
            await channel.exchange_delete(exchange)
        await conn.close()

    url = f"amqp://guest:guest@127.0.0.1:5672/?exchange={exchange}&queue_prefix={prefix}"
    return Namespace(url, f"exchange {exchange} on 127.0.0.1:5672", drop_queues)


async def fresh_database(server: str) -> tuple[str, Callable[[], Awaitable[None]]]:
    """A new database on ``server`` (its own path is replaced), and how to drop it."""
    import asyncpg

    parts = urlsplit(server)
    name = f"swrep_{uuid.uuid4().hex[:10]}"
    admin_url = urlunsplit(parts._replace(path="/postgres", query=""))
    try:
        admin = await asyncpg.connect(admin_url)
    except (OSError, asyncpg.PostgresError) as err:
        raise BenchError(f"PostgreSQL at {parts.hostname}:{parts.port or 5432}: {err}") from None
    await admin.execute(f'CREATE DATABASE "{name}"')

    async def drop() -> None:
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()

    return urlunsplit(parts._replace(path=f"/{name}")), drop


# -- the closed loop of orders -------------------------------------------------------------


class Driver:
    """Keeps ``in_flight`` orders unfinished: places one for each outcome it hears,
    and, between :meth:`open_window` and :meth:`close_window`, counts the outcomes
    and their latencies (publish of ``order.placed`` to receipt of the outcome)."""

    def __init__(self, transport: Transport, in_flight: int) -> None:
        self.transport = transport
        self.in_flight = in_flight
        self.run = f"r{uuid.uuid4().hex[:8]}"
        self.placed = 0
        self.started: dict[str, float] = {}
        self.heard = 0
        self.cancelled = 0
        self.latencies = array("d")
        self.window = (float("inf"), float("inf"))
        self.placing = True
        self._room = asyncio.Event()

    def open_window(self) -> None:
        self.window = (time.perf_counter(), float("inf"))

    def close_window(self) -> float:
        """Stop counting (and placing); the window's length in seconds."""
        began = self.window[0]
        ended = time.perf_counter()
        self.window = (began, ended)
        self.placing = False
        self._room.set()
        return ended - began

    async def feed(self) -> None:
        while self.placing:
            free = min(self.in_flight - len(self.started), MAX_BATCH)
            if free <= 0:
                self._room.clear()
                await self._room.wait()
                continue
            orders = [
                order_placed(f"{self.run}-{n}", source="sagawire/bench-replicas")
                for n in range(self.placed, self.placed + free)
            ]
            now = time.perf_counter()
            for m in orders:
                self.started[m.key or ""] = now
            self.placed += free
            await self.transport.publish(orders)

    async def hear(self) -> None:
        topology = Topology(consumes=OUTCOMES, produces=("order.placed",), group=DRIVER_GROUP)
        stream = self.transport.consume(topology, max_batch=MAX_BATCH)
        try:
            async for batch in stream:
                now = time.perf_counter()
                began, ended = self.window
                for d in batch:
                    with contextlib.suppress(orjson.JSONDecodeError, AttributeError):
                        event = orjson.loads(d.body)
                        placed = self.started.pop(str(event.get("correlationid")), None)
                        if placed is None:
                            continue
                        self.heard += 1
                        if began <= now < ended:
                            self.latencies.append(now - placed)
                            self.cancelled += event.get("type") == "order.cancelled"
                await self.transport.ack(batch)
                self._room.set()
        finally:
            await close_stream(stream)


# -- one run: N replicas -------------------------------------------------------------------


@dataclass
class Reading:
    """One replica's counters at one moment."""

    deliveries: float
    conflicts: float
    commits: float
    cpu_s: float | None
    throttling: tuple[int, int] | None


@dataclass
class Row:
    broker: str
    replicas: int
    sagas_per_s: float
    p50_ms: float
    p99_ms: float
    deliveries: int
    conflicts: int
    replica_cores: list[float | None] = field(default_factory=list)
    throttled: list[float | None] = field(default_factory=list)
    cancelled: int = 0
    machine_busy: float | None = None  # cores of the whole machine busy over the window
    load: float = 0.0
    commits: int = 0  # store commits of the replicas (deliveries per commit: the batching)

    @property
    def conflicts_per_delivery(self) -> float:
        return self.conflicts / self.deliveries if self.deliveries else 0.0

    @property
    def cpu_ms_per_saga(self) -> float | None:
        """The replicas' CPU per saga finished: whether N replicas do more work for the
        same sagas (re-deciding conflicts, smaller batches), apart from how much CPU the
        quota or the machine let them have."""
        if None in self.replica_cores or not self.sagas_per_s:
            return None
        return sum(c or 0.0 for c in self.replica_cores) * 1000 / self.sagas_per_s


def _opt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def format_row(row: Row, base: Row | None) -> str:
    """The run's one line: ``key=value`` pairs, ``vs_1`` against ``base`` (N=1)."""
    ratio = f"{row.sagas_per_s / base.sagas_per_s:.2f}x" if base and base.sagas_per_s else "-"
    return " ".join(
        [
            f"broker={row.broker}",
            f"replicas={row.replicas}",
            f"sagas_per_s={row.sagas_per_s:.1f}",
            f"vs_1={ratio}",
            f"p50_ms={row.p50_ms:.0f}",
            f"p99_ms={row.p99_ms:.0f}",
            f"deliveries={row.deliveries}",
            f"conflicts={row.conflicts}",
            f"conflicts_per_delivery={row.conflicts_per_delivery:.4f}",
            f"deliveries_per_commit={row.deliveries / row.commits if row.commits else 0:.1f}",
            "replica_cores=" + ",".join(_opt(c, ".2f") for c in row.replica_cores),
            f"cpu_ms_per_saga={_opt(row.cpu_ms_per_saga, '.2f')}",
            "throttled=" + ",".join(_opt(t, ".0%") for t in row.throttled),
            f"cancelled={row.cancelled}",
            f"machine_busy={_opt(row.machine_busy, '.2f')}",
            f"load={row.load:.2f}",
        ]
    )


async def _scrape(http: httpx.AsyncClient, car: Sidecar, index: int, limit: Limit) -> Reading:
    """Replica ``index``'s counters now. A scrape is tried three times: on a loaded
    machine a request may meet a connection the server is just closing."""
    for attempt in range(3):
        try:
            response = await http.get(f"{car.base}/metrics")
            response.raise_for_status()
            break
        except httpx.HTTPError as err:
            if car.proc.poll() is not None or attempt == 2:
                raise BenchError(
                    f"replica {index}: /metrics failed ({err!r}; exit code {car.proc.poll()}):"
                    f"\n{car.tail()}"
                ) from None
            await asyncio.sleep(0.2)
    text = response.text
    found = {
        "sagawire_deliveries_total": 0.0,
        "sagawire_conflicts_total": 0.0,
        "sagawire_commit_duration_seconds_count": 0.0,
    }
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in found:
                found[sample.name] = float(sample.value)
    return Reading(
        found["sagawire_deliveries_total"],
        found["sagawire_conflicts_total"],
        found["sagawire_commit_duration_seconds_count"],
        process_cpu_s(car.proc.pid),
        limit.throttling(index),
    )


async def _settle(
    http: httpx.AsyncClient, cars: Sequence[Sidecar], limit: Limit, driver: Driver, warmup: float
) -> None:
    """Wait out the warm-up, and until every replica took deliveries over the last second
    (a Kafka group rebalances at each join: a replica that joined last takes nothing until
    the group settles)."""
    await asyncio.sleep(max(warmup - 1.0, 0.0))
    deadline = time.monotonic() + SETTLE_TIMEOUT
    before = [await _scrape(http, c, i, limit) for i, c in enumerate(cars)]
    while True:
        await asyncio.sleep(1.0)
        now = [await _scrape(http, c, i, limit) for i, c in enumerate(cars)]
        idle = [
            i
            for i, (a, b) in enumerate(zip(before, now, strict=True))
            if b.deliveries <= a.deliveries
        ]
        if not idle:
            return
        if time.monotonic() > deadline:
            raise BenchError(
                f"replica(s) {idle} took no deliveries {SETTLE_TIMEOUT:g}s after the warm-up"
                f" ({driver.heard} orders finished so far)"
            )
        before = now


async def _stop(cars: Sequence[Sidecar]) -> None:
    async def stop(car: Sidecar) -> None:
        if car.proc.poll() is None:
            with contextlib.suppress(AssertionError):
                await car.terminate()
        car.close()

    await asyncio.gather(*(stop(c) for c in cars))


async def run_replicas(
    broker: str, replicas: int, url: str, limit: Limit, args: argparse.Namespace
) -> Row:
    """One run (see the module): N sidecars, the services, the loop; its :class:`Row`."""
    logs = Path(tempfile.mkdtemp(prefix="sagawire-replicas-"))
    store, drop_database = await fresh_database(args.store)
    transport = open_transport(url)
    cars: list[Sidecar] = []
    tasks: list[asyncio.Task[None]] = []
    services: ChildServices | None = None
    ok = False
    try:
        await transport.start()
        await transport.declare(
            Topology(consumes=OUTCOMES, produces=("order.placed",), group=DRIVER_GROUP)
        )
        # The sidecars start while the services do: both take seconds on a busy machine.
        env = {
            "SAGAWIRE_PARTITIONS": str(args.own_partitions),
            "SAGAWIRE_CACHE_SIZE": str(args.cache_size),
        }
        cars = [Sidecar(url, store, GROUP, logs / f"sidecar-{i}.log", env) for i in range(replicas)]
        for i, car in enumerate(cars):
            try:
                limit.hold(car.proc.pid, i)
            except OSError as err:
                what = f"cannot hold sidecar {i} to its quota ({limit.describe}): {err}"
                raise BenchError(what) from None
        try:
            services = await ChildServices.start(url, seed=1)
        except RuntimeError as err:
            raise BenchError(str(err)) from None
        # A connection per request: a kept-alive one may be closed by the server as it is reused.
        no_keepalive = httpx.Limits(max_keepalive_connections=0)
        async with httpx.AsyncClient(timeout=10.0, limits=no_keepalive) as http:
            try:
                await asyncio.gather(*(c.wait_ready(http) for c in cars))
            except AssertionError as err:
                raise BenchError(f"a sidecar did not become ready: {err}") from None
            driver = Driver(transport, args.in_flight)
            tasks = [asyncio.create_task(driver.hear()), asyncio.create_task(driver.feed())]
            await _race(_settle(http, cars, limit, driver, args.warmup), tasks)
            before = [await _scrape(http, c, i, limit) for i, c in enumerate(cars)]
            busy = machine_busy_s()
            driver.open_window()
            await _race(asyncio.sleep(args.seconds), tasks)
            elapsed = driver.close_window()
            busy_after = machine_busy_s()
            after = [await _scrape(http, c, i, limit) for i, c in enumerate(cars)]
        row = _row(broker, replicas, driver, elapsed, before, after)
        if busy is not None and busy_after is not None:
            row.machine_busy = (busy_after - busy) / elapsed
        ok = True
        return row
    finally:
        await _end(tasks, transport)
        await asyncio.gather(_stop(cars), *([services.close()] if services else []))
        limit.release()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(transport.close(), END_GRACE)
        await drop_database()
        if ok:
            shutil.rmtree(logs, ignore_errors=True)
        else:
            print(f"# sidecar logs kept in {logs}", file=sys.stderr)


async def _end(tasks: Sequence[asyncio.Task[None]], transport: Transport) -> None:
    """Stop the driver's tasks. Cancelled, they end at once as a rule; one that does not
    (seen once on NATS, the driver's consume stream not ending) is reported with its
    stack, and its transport closed under it, as ``bench.stop_engine`` does for the
    engine: a run must not hang at its end with its sidecars still up."""
    for task in tasks:
        task.cancel()
    if not tasks:
        return
    _, pending = await asyncio.wait(tasks, timeout=END_GRACE)
    if pending:
        for task in pending:
            print("# a driver task did not end when cancelled:", file=sys.stderr)
            task.print_stack(file=sys.stderr)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(transport.close(), END_GRACE)
        await asyncio.wait(pending, timeout=END_GRACE)


async def _race(work: Awaitable[None], tasks: Sequence[asyncio.Task[None]]) -> None:
    """``work``, unless the driver's loop fails first (its error is raised)."""
    job = asyncio.ensure_future(work)
    done, _ = await asyncio.wait({job, *tasks}, return_when=asyncio.FIRST_COMPLETED)
    if job not in done:
        job.cancel()
        for task in done:
            task.result()
        raise BenchError("the order driver stopped")
    job.result()


def _row(
    broker: str,
    replicas: int,
    driver: Driver,
    elapsed: float,
    before: Sequence[Reading],
    after: Sequence[Reading],
) -> Row:
    lat = driver.latencies
    cores: list[float | None] = []
    throttled: list[float | None] = []
    for a, b in zip(before, after, strict=True):
        cores.append(None if a.cpu_s is None or b.cpu_s is None else (b.cpu_s - a.cpu_s) / elapsed)
        if a.throttling is None or b.throttling is None:
            throttled.append(None)
        else:
            periods = b.throttling[0] - a.throttling[0]
            throttled.append((b.throttling[1] - a.throttling[1]) / periods if periods else 0.0)
    return Row(
        broker=broker,
        replicas=replicas,
        sagas_per_s=len(lat) / elapsed,
        p50_ms=percentile(lat, 50) * 1000 if lat else 0.0,
        p99_ms=percentile(lat, 99) * 1000 if lat else 0.0,
        deliveries=round(
            sum(b.deliveries - a.deliveries for a, b in zip(before, after, strict=True))
        ),
        conflicts=round(sum(b.conflicts - a.conflicts for a, b in zip(before, after, strict=True))),
        commits=round(sum(b.commits - a.commits for a, b in zip(before, after, strict=True))),
        replica_cores=cores,
        throttled=throttled,
        cancelled=driver.cancelled,
        load=os.getloadavg()[0],
    )


# -- the command line ----------------------------------------------------------------------


def _replicas(text: str) -> list[int]:
    try:
        counts = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected counts like 1,2,4") from None
    if not counts or any(n < 1 for n in counts):
        raise argparse.ArgumentTypeError(f"{text!r}: every count must be 1 or more")
    return counts


def _positive(kind: type[int] | type[float], zero: bool = False) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if value < 0 or (value == 0 and not zero):
            raise argparse.ArgumentTypeError(
                f"{text!r}: must be {'0 or ' if zero else ''}more than 0"
            )
        return value

    return parse


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--broker", choices=(*BROKERS, "all"), default="all")
    parser.add_argument("--replicas", type=_replicas, default=[1, 2, 4], help="e.g. 1,2,4")
    parser.add_argument(
        "--quota",
        type=_positive(float, zero=True),
        default=0.25,
        help="cores per sidecar (a cgroup CPU quota); 0: no limit",
    )
    parser.add_argument("--in-flight", type=_positive(int), default=200, help="orders unfinished")
    parser.add_argument("--seconds", type=_positive(float), default=30.0, help="timed window")
    parser.add_argument(
        "--warmup", type=_positive(float, zero=True), default=5.0, help="untimed seconds first"
    )
    parser.add_argument("--partitions", type=_positive(int), default=4, help="Kafka topics'")
    parser.add_argument(
        "--own-partitions",
        type=_positive(int, zero=True),
        default=0,
        help="the sidecars' --partitions (NATS, RabbitMQ: one owner per instance); 0: compete",
    )
    parser.add_argument(
        "--cache-size", type=_positive(int, zero=True), default=20000, help="the sidecars'"
    )
    parser.add_argument(
        "--store",
        default="postgresql://postgres@127.0.0.1:5432",
        help="PostgreSQL server URL; each run gets a fresh database on it (the path is replaced)",
    )
    parser.add_argument("--nats-server", default="127.0.0.1:4222", help="HOST:PORT")
    args = parser.parse_args(argv)
    if urlsplit(args.store).scheme not in ("postgresql", "postgres"):
        parser.error(f"--store {args.store!r}: a postgresql:// server URL is needed")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    if args.quota > (cores or 1):
        parser.error(f"--quota {args.quota:g}: more than the machine's {cores} cores")
    args.in_flight = int(args.in_flight)
    args.partitions = int(args.partitions)
    args.own_partitions = int(args.own_partitions)
    args.cache_size = int(args.cache_size)
    args.brokers = list(BROKERS) if args.broker == "all" else [args.broker]
    return args


def _reachable(broker: str, nats_server: str) -> None:
    import socket

    host, port = {
        "nats": (nats_server.rpartition(":")[0], int(nats_server.rpartition(":")[2] or 4222)),
        "rabbitmq": ("127.0.0.1", 5672),
    }.get(broker, ("", 0))
    if not host:
        return
    try:
        socket.create_connection((host, port), 1.0).close()
    except OSError as err:
        raise BenchError(f"{broker} is not reachable on {host}:{port}: {err}") from None


async def main(args: argparse.Namespace) -> int:
    cores = os.cpu_count() or 1
    load = os.getloadavg()
    limit = choose_limit(args.quota)
    print(
        f"# cores={cores} load={load[0]:.2f},{load[1]:.2f},{load[2]:.2f}"
        f" quota={args.quota:g} cores/sidecar via {limit.describe}"
        f" in_flight={args.in_flight} seconds={args.seconds:g} warmup={args.warmup:g}",
        flush=True,
    )
    if load[0] > 1:
        print(
            f"# WARNING: load average {load[0]:.2f} > 1: other work is running and distorts"
            " the figures",
            file=sys.stderr,
            flush=True,
        )
    for broker in args.brokers:
        _reachable(broker, args.nats_server)
        base: Row | None = None
        for n in args.replicas:
            space = await open_namespace(
                broker, args.partitions, args.nats_server, args.own_partitions
            )
            try:
                if n == args.replicas[0]:
                    print(f"# {broker}: {space.note}", flush=True)
                row = await run_replicas(broker, n, space.url, limit, args)
            finally:
                await space.cleanup()
            if n == 1 and base is None:
                base = row
            print(format_row(row, base), flush=True)
    return 0


def cli(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging("warning", json=True)

    async def guarded() -> int:
        task = asyncio.current_task()
        assert task is not None

        def stop() -> None:
            if not task.cancelling():  # a second SIGTERM must not cut the clean-up short
                task.cancel()

        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop)
        return await main(args)

    try:
        return asyncio.run(guarded())
    except (BenchError, SagawireError) as err:
        print(f"bench_replicas: {err}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("bench_replicas: interrupted (cleaned up)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(cli())
