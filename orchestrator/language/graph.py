"""A saga drawn as a graph: Mermaid for docs and the admin view, Graphviz DOT for tools.

Both formats are written from one :class:`Diagram` of nodes and edges, so they never
disagree. A state machine (either declaration form compiled to rows) is drawn state by
state, each node named as the HTTP API and the store name the state
(``compensating:inventory``, not a sanitised id); a flow (observed or parallel steps) is
drawn step by step, each after the steps it waits for.

Only edges that can happen are drawn. A step saga's step compiles to rows for every
retry policy, and with one attempt two of them can never fire: the timeout row that
schedules a retry (its guard ``attempts < 1`` never holds) and the retry timer's row
(nothing sets that timer). :func:`live_rows` drops them, and then, to a fixed point, any
other timer row whose timer no remaining row sets.

Reads a definition through the small protocols below rather than importing
:mod:`orchestrator.language.definition`, which calls back into this module for its
``to_mermaid()``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from orchestrator.language.actions import Action, SetTimer
from orchestrator.language.flowdef import Flow
from orchestrator.language.names import INITIAL, TIMER_PREFIX
from orchestrator.language.status import Status

__all__ = [
    "FORMATS",
    "MARKS",
    "Diagram",
    "Edge",
    "Node",
    "diagram",
    "live_rows",
    "marked_mermaid",
    "to_dot",
    "to_mermaid",
]

FORMATS = ("mermaid", "dot")

START = "__start__"
END = "__end__"


class Row(Protocol):
    """What the graph reads of a :class:`~orchestrator.language.definition.Transition`."""

    @property
    def source(self) -> str: ...
    @property
    def event(self) -> str: ...
    @property
    def target(self) -> str: ...
    @property
    def guard_desc(self) -> str: ...
    @property
    def actions(self) -> tuple[Action, ...]: ...
    @property
    def sends(self) -> tuple[str, ...]: ...


class StepLike(Protocol):
    """What the graph reads of a :class:`~orchestrator.language.definition.StepInfo`."""

    @property
    def name(self) -> str: ...
    @property
    def attempts(self) -> int: ...


class Drawable(Protocol):
    """What the graph reads of a :class:`~orchestrator.language.definition.SagaDefinition`."""

    @property
    def name(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def transitions(self) -> Mapping[str, tuple[Row, ...]]: ...
    @property
    def final(self) -> Mapping[str, Status]: ...
    @property
    def steps(self) -> tuple[StepLike, ...]: ...
    @property
    def flow(self) -> Flow | None: ...
    @property
    def start_events(self) -> tuple[str, ...]: ...


@dataclass(frozen=True, slots=True)
class Node:
    """A state or a step. ``shape``: ``state``, ``final``, ``step`` (a commanded step),
    ``observed`` (a step another service does), ``undo`` (a compensation), ``start``
    or ``end``."""

    id: str
    label: str
    shape: str = "state"


@dataclass(frozen=True, slots=True)
class Edge:
    src: str
    dst: str
    label: str = ""
    dashed: bool = False


@dataclass(frozen=True, slots=True)
class Diagram:
    """``kind`` is ``state`` (a state machine) or ``flow`` (steps after steps)."""

    name: str
    kind: str
    nodes: tuple[Node, ...]
    edges: tuple[Edge, ...]


def _sets(row: Row) -> set[str]:
    return {a.name for a in row.actions if isinstance(a, SetTimer)}


def live_rows(defn: Drawable) -> list[Row]:
    """The rows of ``defn`` that can fire, in declaration order (see the module docs)."""
    rows = [t for ts in defn.transitions.values() for t in ts]
    if defn.kind == "steps":
        single = {s.name for s in defn.steps if s.attempts == 1}
        keys = single | {f"undo:{name}" for name in single}
        never = {f"{key}.retry" for key in keys}
        rows = [t for t in rows if not (_sets(t) & never)]
    while True:
        timers = set().union(*(_sets(t) for t in rows)) if rows else set()
        kept = [
            t
            for t in rows
            if not t.event.startswith(TIMER_PREFIX) or t.event[len(TIMER_PREFIX) :] in timers
        ]
        if len(kept) == len(rows):
            return kept
        rows = kept


def diagram(defn: Drawable) -> Diagram:
    """The nodes and edges of ``defn``, whichever form it was declared in."""
    if defn.flow is not None:
        return _flow_diagram(defn.name, defn.flow, defn.start_events)
    rows = live_rows(defn)
    states = dict.fromkeys(s for t in rows for s in (t.source, t.target) if s != INITIAL)
    states.update(dict.fromkeys(defn.final))
    nodes = [Node(START, "", "start")]
    nodes += [Node(s, s, "final" if s in defn.final else "state") for s in states]
    if defn.final:
        nodes.append(Node(END, "", "end"))
    edges = []
    for t in rows:
        label = t.event + (f" [{t.guard_desc}]" if t.guard_desc else "")
        if t.sends:
            label += " / " + ", ".join(t.sends)
        edges.append(Edge(START if t.source == INITIAL else t.source, t.target, label))
    edges += [Edge(state, END, status.value) for state, status in defn.final.items()]
    return Diagram(defn.name, "state", tuple(nodes), tuple(edges))


def _flow_diagram(name: str, flow: Flow, starts: Sequence[str]) -> Diagram:
    nodes = [Node("start", starts[0] if starts else "start", "start")]
    edges: list[Edge] = []
    for s in flow.steps:
        node = _step_id(s.name)
        if s.send is None:
            nodes.append(Node(node, f"{s.name}: {', '.join(s.successes)}", "observed"))
        else:
            nodes.append(Node(node, f"{s.name}: {s.send.type}", "step"))
        edges += [Edge(_step_id(pre), node) for pre in s.after]
        if not s.after:
            edges.append(Edge("start", node))
        if s.compensate is not None:
            nodes.append(Node(f"{node}_undo", s.compensate.type, "undo"))
            edges.append(Edge(node, f"{node}_undo", "on failure", dashed=True))
    nodes.append(Node("done", "completed", "end"))
    edges += [Edge(_step_id(s.name), "done") for s in flow.steps if not flow.successors.get(s.name)]
    return Diagram(name, "flow", tuple(nodes), tuple(edges))


def _step_id(name: str) -> str:
    """A node id for a step (letters, digits and underscores, apart from the ``start``
    and ``done`` nodes whatever the step is called)."""
    return "step_" + "".join(c if c.isalnum() else "_" for c in name)


# -- Mermaid --------------------------------------------------------------------------


def to_mermaid(defn: Drawable) -> str:
    """A Mermaid ``stateDiagram-v2`` of a state machine, a ``flowchart`` of a flow."""
    d = diagram(defn)
    return _mermaid_flow(d) if d.kind == "flow" else _mermaid_states(d)


MARKS = {
    "current": "fill:#fde68a,stroke:#b45309,stroke-width:3px,color:#111",
    "visited": "fill:#dbeafe,stroke:#1d4ed8,color:#111",
    "failed": "fill:#fee2e2,stroke:#b91c1c,stroke-width:2px,color:#111",
    "undone": "fill:#ede9fe,stroke:#6d28d9,color:#111",
}
"""How the console marks an instance on its saga's diagram: where it is, where it has
been, what failed, what was undone."""


def marked_mermaid(defn: Drawable, marks: Mapping[str, str]) -> str:
    """:func:`to_mermaid` with states (a state machine) or steps (a flow) marked, each
    by its name as the API shows it, with one of :data:`MARKS`' classes. Names the
    diagram does not draw are left out."""
    d = diagram(defn)
    text = to_mermaid(defn)
    ids = {n.id for n in d.nodes}
    by_class: dict[str, list[str]] = {}
    for name, mark in marks.items():
        node = _step_id(name) if d.kind == "flow" else name
        if node in ids and mark in MARKS:
            by_class.setdefault(mark, []).append(node if d.kind == "flow" else _mermaid_id(node))
    lines = [text]
    for mark, nodes in by_class.items():
        lines.append(f"    classDef {mark} {MARKS[mark]}")
        lines.append(f"    class {','.join(sorted(nodes))} {mark}")
    return "\n".join(lines)


def _mermaid_id(state: str) -> str:
    """Mermaid state ids cannot contain ':' or '.'; the label keeps the real name."""
    return state.replace(":", "__").replace(".", "_")


def _mermaid_states(d: Diagram) -> str:
    lines = ["stateDiagram-v2"]
    for n in d.nodes:
        if n.shape in ("state", "final") and _mermaid_id(n.id) != n.id:
            lines.append(f'    state "{n.label}" as {_mermaid_id(n.id)}')

    def ref(node: str) -> str:
        return "[*]" if node in (START, END) else _mermaid_id(node)

    for e in d.edges:
        lines.append(f"    {ref(e.src)} --> {ref(e.dst)}: {e.label}")
    return "\n".join(lines)


def _mermaid_flow(d: Diagram) -> str:
    """Observed steps in round boxes, labelled with the events that complete them;
    commanded ones with their command; compensations dashed."""
    shapes = {
        "start": '(("{}"))',
        "end": '(("{}"))',
        "observed": '(["{}"])',
        "step": '["{}"]',
        "undo": '["{}"]',
    }
    lines = ["flowchart LR"]
    drawn: set[str] = set()

    def node(n: Node) -> None:
        if n.id not in drawn and n.shape != "end":
            drawn.add(n.id)
            lines.append(f"    {n.id}{shapes[n.shape].format(_mermaid_text(n.label))}")

    by_id = {n.id: n for n in d.nodes}
    node(by_id["start"])
    for n in d.nodes:
        if n.shape not in ("step", "observed"):
            continue
        node(n)
        for e in d.edges:
            if e.dst == n.id and not e.dashed:
                lines.append(f"    {e.src} --> {e.dst}")
        for e in d.edges:
            if e.src == n.id and e.dashed:
                undo = by_id[e.dst]
                drawn.add(undo.id)
                text = _mermaid_text(undo.label)
                lines.append(f'    {e.src} -.->|{e.label}| {undo.id}["{text}"]')
    end = by_id["done"]
    lines.append(f'    {end.id}(("{end.label}"))')
    lines.extend(f"    {e.src} --> {e.dst}" for e in d.edges if e.dst == end.id)
    return "\n".join(lines)


def _mermaid_text(text: str) -> str:
    return text.replace('"', "#quot;")


# -- Graphviz -------------------------------------------------------------------------


def to_dot(defn: Drawable) -> str:
    """A Graphviz ``digraph`` of ``defn`` (``dot -Tsvg`` draws it)."""
    d = diagram(defn)
    lines = [
        f"digraph {_quote(d.name)} {{",
        "    rankdir=LR;",
        '    node [shape=box, style=rounded, fontname="Helvetica"];',
        '    edge [fontname="Helvetica", fontsize=10];',
    ]
    for n in d.nodes:
        shape = _DOT_NODE[n.shape] if n.label else _DOT_POINT[n.shape]
        lines.append(f"    {_quote(n.id)} [{_attrs(shape, label=n.label)}];")
    for e in d.edges:
        extra = {"style": "dashed"} if e.dashed else {}
        attrs = _attrs(extra, label=e.label) if e.label or extra else ""
        tail = f" [{attrs}]" if attrs else ""
        lines.append(f"    {_quote(e.src)} -> {_quote(e.dst)}{tail};")
    lines.append("}")
    return "\n".join(lines)


_DOT_NODE: dict[str, dict[str, str]] = {
    "state": {},
    "final": {"peripheries": "2"},
    "step": {},
    "observed": {"style": "rounded,dashed"},
    "undo": {"style": "dashed"},
    "start": {"shape": "circle"},
    "end": {"shape": "doublecircle"},
}


_DOT_POINT: dict[str, dict[str, str]] = {
    "start": {"shape": "point", "width": "0.2"},
    "end": {"shape": "doublecircle", "width": "0.15", "fixedsize": "true"},
}
"""The machine form's unnamed start and end (Mermaid's ``[*]``)."""


def _attrs(base: Mapping[str, str], *, label: str) -> str:
    pairs: Iterable[tuple[str, str]] = [*base.items(), ("label", label)]
    return ", ".join(f"{k}={_quote(v)}" for k, v in pairs)


def _quote(text: str) -> str:
    """A DOT quoted string: backslashes and quotes escaped, newlines as ``\\n``."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'
