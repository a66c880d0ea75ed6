// One instance (#/instance/<saga>/<correlation id>): what it is, everything that
// happened to it, what it waits for, its place on the saga's diagram, its state JSON,
// and the operator's actions on it.
//
// The page is built once and its data sections are refilled on each refresh (every 5 s
// while the instance runs), so a reason being typed, the keyboard focus and an open
// confirmation survive a refresh; the diagram is redrawn only when its text changes.

import { ApiError, api } from "../api.js";
import { confirmAction } from "../confirm.js";
import { diagram } from "../diagram.js";
import { ago, clear, h, notice, statusBadge, time } from "../dom.js";

const POLL_MS = 5000;

// The API route takes the correlation id as a path ({correlation_id:path}): encoded
// whole, a "/" in it travels as %2F, which the server decodes back.
function instancePath(saga, cid) {
  return `/sagas/${encodeURIComponent(saga)}/${encodeURIComponent(cid)}`;
}

// "in 4 min" / "overdue by 3 s": how far a due time is from now.
function until(iso) {
  const ms = new Date(iso).getTime() - Date.now();
  if (Number.isNaN(ms)) return "";
  const s = Math.abs(ms) / 1000;
  const span = s < 90 ? `${Math.round(s)} s` : s < 5400 ? `${Math.round(s / 60)} min` : `${Math.round(s / 3600)} h`;
  return ms >= 0 ? `in ${span}` : `overdue by ${span}`;
}

function when(iso) {
  return h("time", { datetime: iso, title: `${ago(iso)}` }, time(iso));
}

function facts(d) {
  const row = (label, ...value) => [h("dt", {}, label), h("dd", {}, ...value)];
  return h("dl", { class: "facts" },
    row("saga", d.saga),
    row("correlation id", h("span", { class: "mono" }, d.correlation_id)),
    row("status", statusBadge(d.status, d.stuck)),
    row("state", h("span", { class: "mono" }, d.state)),
    row("version", String(d.version)),
    row("created", when(d.created_at)),
    row("updated", when(d.updated_at), " ", h("span", { class: "muted small" }, `(${ago(d.updated_at)})`)),
    row("definition version", h("span", { class: "mono" }, d.definition_version)),
    d.failure ? row("failure", h("span", { class: "failure" }, d.failure)) : null,
  );
}

const KIND_LABEL = { event: "event in", timer: "timer fired", operator: "operator action", deviation: "deviation" };

function commandLine(text) {
  const at = text.indexOf(":");
  const [type, id] = at < 0 ? [text, ""] : [text.slice(0, at), text.slice(at + 1)];
  return h("li", { class: "kind-command" },
    h("span", { class: "tl-kind" }, "command out"), " ",
    h("span", { class: "mono" }, type), " ",
    id ? h("span", { class: "mono muted small", title: "message id" }, id) : null);
}

function timelineEntry(e) {
  const moved = e.from_state === e.to_state ? e.to_state : `${e.from_state} -> ${e.to_state}`;
  return h("li", { class: `kind-${e.kind}`, dataset: { seq: String(e.seq) } },
    h("div", { class: "tl-head" },
      when(e.at), " ",
      h("span", { class: `tl-kind tl-${e.kind}` }, KIND_LABEL[e.kind] || e.kind), " ",
      h("b", { class: "mono" }, e.message_type)),
    h("div", { class: "small" },
      h("span", { class: "mono", title: "state" }, moved), " ",
      h("span", { class: "muted" }, "message "), h("span", { class: "mono muted", title: "message id" }, e.message_id)),
    e.note ? h("div", { class: "tl-note" }, e.note) : null,
    e.commands.length ? h("ul", { class: "commands", "aria-label": "commands out" }, e.commands.map(commandLine)) : null,
  );
}

// A wide saga's diagram fits its column, small; "Actual size" shows it at its own size
// in a scrolling box, the current state scrolled into view. A redrawn diagram (the
// instance moved) starts fitted again: reset().
function sizeToggle(box) {
  const button = h("button", { type: "button", class: "link", "aria-pressed": "false" }, "Actual size");
  const set = (actual) => {
    button.setAttribute("aria-pressed", String(actual));
    button.textContent = actual ? "Fit to column" : "Actual size";
    const svg = box.querySelector("svg");
    if (!svg) return;
    const width = svg.viewBox && svg.viewBox.baseVal ? svg.viewBox.baseVal.width : 0;
    svg.style.width = actual && width ? `${Math.ceil(width)}px` : "";
    svg.style.maxWidth = actual ? "none" : width ? `${width}px` : ""; // Mermaid's own cap
    const here = svg.querySelector(".current");
    if (actual && here) here.scrollIntoView({ block: "nearest", inline: "center" });
  };
  button.addEventListener("click", () => set(button.getAttribute("aria-pressed") !== "true"));
  return { button, reset: () => set(false) };
}

function table(columns, rows) {
  return h("div", { class: "table-wrap" }, h("table", {},
    h("thead", {}, h("tr", {}, columns.map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", {}, rows.map((cells) => h("tr", {}, cells.map((c) => h("td", {}, c)))))));
}

function waiting(d) {
  return [
    h("h2", {}, "Pending timers"),
    d.timers.length
      ? table(["name", "due", "when"], d.timers.map((t) => [h("span", { class: "mono" }, t.name), when(t.due), until(t.due)]))
      : h("p", { class: "muted" }, "None."),
    h("h2", {}, "Unsent commands (outbox)"),
    d.outbox.length
      ? table(["id", "destination", "bytes", "created"], d.outbox.map((o) =>
          [h("span", { class: "mono" }, o.id), h("span", { class: "mono" }, o.destination), String(o.bytes), when(o.created_at)]))
      : h("p", { class: "muted" }, "None: every command it sent was published."),
    h("h2", {}, "Parked messages"),
    d.parked.length
      ? table(["message id", "destination", "parked", "expires", "reason"], d.parked.map((p) =>
          [h("span", { class: "mono" }, p.message_id), h("span", { class: "mono" }, p.destination), when(p.parked_at), when(p.expires), p.reason]))
      : h("p", { class: "muted" }, "None."),
  ];
}

// What each action needs, and why it is unavailable otherwise (the API checks again: a
// 409 with its reason if the instance moved meanwhile).
const ACTIONS = {
  abort: { label: "Abort", cls: "danger", allowed: (s) => s === "running",
    why: (s) => `Abort needs a running instance; this one is ${s}.` },
  retry: { label: "Retry", cls: "", allowed: (s) => s === "running",
    why: (s) => `Retry needs a running instance; this one is ${s}.` },
  resume: { label: "Resume", cls: "", allowed: (s) => s === "compensation_failed",
    why: (s) => `Resume needs a compensation_failed instance; this one is ${s}.` },
};

const EXPLAIN = {
  abort: "compensate the steps done, in reverse order (or, without \"compensate\", stop where it is)",
  retry: "send the current step's command (or compensation) again, as its next attempt",
  resume: "try the failed compensation again, attempts counted afresh, then go on compensating",
};

function actionPanel(saga, cid, ctx, reload) {
  const reason = h("textarea", { id: "action-reason", name: "reason", maxlength: "2000", rows: "2",
    placeholder: "why (recorded in the instance's history)" });
  const compensate = h("input", { type: "checkbox", name: "compensate", checked: true });
  const result = h("div", { class: "action-result", "aria-live": "polite" });
  const buttons = {};
  const explanations = {};
  const panel = h("section", { class: "card action-panel", "aria-label": "operator actions" },
    h("h2", {}, "Operator actions"),
    h("label", { for: "action-reason" }, "Reason"),
    reason,
    h("label", { class: "check" }, compensate, " compensate on abort (unchecked: stop where it is, nothing sent)"),
  );
  const row = h("div", { class: "actions" });
  const notes = h("ul", { class: "action-notes small" });
  for (const [name, spec] of Object.entries(ACTIONS)) {
    explanations[name] = h("li", { id: `why-${name}` });
    buttons[name] = h("button", { type: "button", class: spec.cls, "aria-describedby": `why-${name}`,
      dataset: { action: name }, onclick: () => act(name) }, spec.label);
    row.append(buttons[name]);
    notes.append(explanations[name]);
  }
  panel.append(row, notes, result);

  let status = null;
  let busy = false;
  const update = (s) => {
    status = s;
    for (const [name, spec] of Object.entries(ACTIONS)) {
      const ok = spec.allowed(s);
      buttons[name].disabled = !ok || busy;
      explanations[name].className = ok ? "" : "disabled-why";
      explanations[name].textContent = ok ? `${spec.label}: ${EXPLAIN[name]}.` : spec.why(s);
    }
  };

  async function act(name) {
    const spec = ACTIONS[name];
    if (busy || !spec.allowed(status)) return;
    const why = reason.value.trim();
    const comp = compensate.checked;
    const lines = [
      `${spec.label} ${saga} instance ${cid}?`,
      `It will ${name === "abort" && !comp ? "stop where it is: aborted, nothing sent" : EXPLAIN[name]}.`,
      why ? `Reason: ${why}` : "No reason given.",
    ];
    const text = lines.join(" ");
    if (!(await confirmAction({ title: `${spec.label} this instance?`, text, action: spec.label, danger: name === "abort" }))) {
      buttons[name].focus();
      return;
    }
    busy = true;
    update(status);
    clear(result);
    try {
      const params = name === "abort" && !comp ? { compensate: "false" } : null;
      const answer = await ctx.call(() => api(`${instancePath(saga, cid)}/${name}`, { method: "POST", params, body: { reason: why } }));
      result.append(h("p", { class: "notice ok", role: "status" },
        `${spec.label} done: state ${answer.state}, status ${answer.status} (version ${answer.version}).`));
      reason.value = "";
    } catch (err) {
      // A 409 is the API's reason the action does not apply (now): shown as it says it.
      const text = err instanceof ApiError ? err.message : `the console failed: ${err.message}`;
      const what = err instanceof ApiError && err.status === 409 ? "refused" : "failed";
      result.append(h("p", { class: "notice error", role: "alert" }, `${spec.label} ${what}: ${text}`));
    } finally {
      busy = false;
      update(status);
    }
    await reload();
  }

  return { panel, update };
}

export async function render(root, route, ctx, current) {
  const [saga, cid] = route.parts;
  root.dataset.title = "Instance";
  if (!saga || cid === undefined || route.parts.length !== 2) {
    root.append(h("h1", {}, "Instance"),
      notice("error", "This link names no instance: it should be #/instance/<saga>/<correlation id>."),
      h("a", { href: ctx.link("instances") }, "Search instances"));
    return;
  }
  root.dataset.title = `${saga} ${cid}`;

  const first = await api(instancePath(saga, cid)); // a 404 shows as the page's error
  const status = h("span", { class: "instance-status" });
  const refreshNote = h("span", { class: "muted small", "aria-live": "polite" });
  const factsBox = h("div", {});
  const timeline = h("ol", { class: "timeline", "aria-label": "history" });
  const figure = h("div", { class: "diagram-box" });
  const size = sizeToggle(figure);
  const waits = h("div", {});
  const dataPre = h("pre", { class: "json", "aria-label": "state JSON", tabindex: "0" });
  const stepsPre = h("pre", { class: "json", "aria-label": "steps", tabindex: "0" });
  let drawn = null;
  let loading = null; // the refresh in flight
  let again = false; // asked for while one was in flight: its answer may predate an action

  async function load() {
    do {
      again = false;
      try {
        fill(await ctx.call(() => api(instancePath(saga, cid))));
        refreshNote.textContent = "";
      } catch (err) {
        refreshNote.textContent = `refresh failed: ${err.message}`;
      }
    } while (again);
  }

  function reload() {
    if (loading) {
      again = true;
      return loading;
    }
    loading = load().finally(() => { loading = null; });
    return loading;
  }

  const refresh = h("button", { type: "button", class: "refresh", onclick: () => reload() }, "Refresh");
  const { panel, update } = actionPanel(saga, cid, ctx, reload);

  function fill(d) {
    clear(status).append(statusBadge(d.status, d.stuck), " ", h("span", { class: "mono" }, d.state));
    clear(factsBox).append(facts(d));
    clear(timeline).append(...d.history.map(timelineEntry));
    if (!d.history.length) timeline.append(h("li", {}, h("span", { class: "muted" }, "No history recorded.")));
    if (d.diagram !== drawn) {
      drawn = d.diagram;
      clear(figure).append(diagram(d.diagram, `state diagram of ${d.saga}, this instance's path and state marked`));
      size.reset();
    }
    clear(waits).append(...waiting(d));
    dataPre.textContent = JSON.stringify(d.data, null, 2);
    stepsPre.textContent = Object.keys(d.steps).length ? JSON.stringify(d.steps, null, 2) : "(no flow steps: a step saga or state machine)";
    update(d.status);
    running = d.status === "running";
    auto.textContent = running ? `refreshes every ${POLL_MS / 1000} s while running` : "";
  }

  let running = false;
  const auto = h("span", { class: "muted small" });
  root.append(
    h("p", { class: "small" }, h("a", { href: ctx.link("instances", [], { saga }) }, `< ${saga} instances`)),
    h("h1", { class: "instance-title" }, h("span", {}, saga), " ", h("span", { class: "mono cid" }, cid), " ", status),
    h("div", { class: "actions" }, refresh, auto, refreshNote),
    h("div", { class: "grid2 instance-top" }, h("section", { "aria-label": "facts" }, factsBox), panel),
    h("div", { class: "grid2 instance-body" },
      h("section", { "aria-label": "timeline" }, h("h2", {}, "Timeline"), timeline),
      h("section", { "aria-label": "diagram" },
        h("div", { class: "diagram-head" }, h("h2", {}, "Diagram"), size.button),
        h("p", { class: "muted small" }, "This instance's path is shaded blue, where it is now yellow."),
        figure)),
    waits,
    h("div", { class: "grid2" },
      h("section", {}, h("h2", {}, "State (data)"), dataPre),
      h("section", {}, h("h2", {}, "Steps"), stepsPre)),
  );
  fill(first);

  const timer = setInterval(() => {
    if (!current()) { clearInterval(timer); return; } // the operator went elsewhere
    if (running && document.body.contains(root) && !document.hidden) reload();
  }, POLL_MS);
}
