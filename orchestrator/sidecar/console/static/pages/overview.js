// Overview: per saga, instances by state and status, rates from the counters between two
// polls, stuck instances and dead letters linking to their lists, recent deviations.

import { api } from "../api.js";
import { ago, clear, h, notice, time } from "../dom.js";

const POLL_MS = 5000;
let previous = null; // {at: ms, sagas: {name: {started, finished...}}}: for the rates
let timer = null;

function number(label, value, href = null, cls = "") {
  const shown = h("b", { class: cls }, String(value));
  return h("div", { class: "number" }, href ? h("a", { href }, shown) : shown, h("span", { class: "muted small" }, label));
}

function perMinute(now, before, key) {
  if (!before) return null;
  const minutes = (now.at - before.at) / 60000;
  if (minutes <= 0) return null;
  const delta = (now.counts[key] || 0) - (before.counts[key] || 0);
  return Math.max(0, delta) / minutes;
}

function counts(saga) {
  const f = saga.finished || {};
  return {
    started: saga.started,
    completed: f.completed || 0,
    compensated: f.compensated || 0,
    failed: (f.compensation_failed || 0) + (f.aborted || 0),
  };
}

function sagaCard(saga, ctx, rates) {
  const statuses = Object.entries(saga.instances).sort();
  const states = Object.entries(saga.states).sort();
  const rate = (key) => {
    const r = rates && rates[key];
    return r === null || r === undefined ? "-" : r.toFixed(1);
  };
  return h("section", { class: "card", "aria-label": `saga ${saga.name}` },
    h("h2", {}, h("a", { href: ctx.link("instances", [], { saga: saga.name }) }, saga.name), " ",
      h("span", { class: "muted small" }, saga.kind)),
    h("div", { class: "numbers" },
      statuses.length ? statuses.map(([status, n]) => number(status, n, ctx.link("instances", [], { saga: saga.name, status }), `status-${status}`))
        : h("span", { class: "muted" }, "no instances yet"),
      number("stuck", saga.stuck, ctx.link("instances", [], { saga: saga.name, stuck: "true" }), saga.stuck ? "status-aborted" : ""),
    ),
    h("div", { class: "numbers", "aria-label": "per minute" },
      number("started/min", rate("started")),
      number("completed/min", rate("completed")),
      number("compensated/min", rate("compensated")),
      number("failed/min", rate("failed")),
    ),
    states.length ? h("details", {},
      h("summary", {}, "by state"),
      h("table", {},
        h("thead", {}, h("tr", {}, h("th", {}, "state"), h("th", {}, "status"), h("th", {}, "instances"), h("th", {}, "stuck"))),
        h("tbody", {}, states.flatMap(([state, byStatus]) => Object.entries(byStatus).map(([status, n]) =>
          h("tr", {},
            h("td", {}, h("a", { href: ctx.link("instances", [], { saga: saga.name, state: status === "running" ? state : null, status }) }, state)),
            h("td", {}, status),
            h("td", {}, String(n)),
            h("td", {}, status === "running" ? String(saga.stuck_by_state[state] || 0) : ""))))))) : null,
    Object.keys(saga.deviations).length ? h("p", { class: "small" }, "deviations since start: ",
      Object.entries(saga.deviations).map(([k, n]) => `${k} ${n}`).join(", ")) : null,
  );
}

async function fill(root, ctx) {
  const data = await api("/overview");
  const now = { at: Date.now(), counts: Object.fromEntries(data.sagas.map((s) => [s.name, counts(s)])) };
  const rates = {};
  for (const s of data.sagas) {
    const before = previous && previous.counts[s.name] ? { at: previous.at, counts: previous.counts[s.name] } : null;
    const current = { at: now.at, counts: now.counts[s.name] };
    rates[s.name] = Object.fromEntries(["started", "completed", "compensated", "failed"].map((k) => [k, perMinute(current, before, k)]));
  }
  previous = now;
  clear(root).append(
    h("h1", {}, "Overview"),
    h("p", { class: "muted small" }, `as of ${time(data.at)}; rates between two looks ${POLL_MS / 1000} s apart`),
    h("div", { class: "numbers" },
      number("dead letters", data.dead_letters_capped ? `${data.dead_letters}+` : data.dead_letters, ctx.link("deadletters"), data.dead_letters ? "status-aborted" : ""),
      number("unsent commands", data.outbox_backlog),
      number("parked messages", data.parked),
    ),
    h("div", { class: "cards" }, data.sagas.map((s) => sagaCard(s, ctx, rates[s.name]))),
    h("h2", {}, "Recent deviations"),
    data.recent_deviations.length
      ? h("div", { class: "table-wrap" }, h("table", {},
          h("thead", {}, h("tr", {}, ["when", "saga", "instance", "event", "what"].map((c) => h("th", {}, c)))),
          h("tbody", {}, data.recent_deviations.map((d) => h("tr", {},
            h("td", { title: time(d.at) }, ago(d.at)),
            h("td", {}, d.saga),
            h("td", { class: "mono" }, h("a", { href: ctx.link("instance", [d.saga, d.correlation_id]) }, d.correlation_id)),
            h("td", { class: "mono" }, d.message_type),
            h("td", {}, d.note.replace(/^deviation /, "")))))))
      : h("p", { class: "muted" }, "None recorded."),
  );
}

export async function render(root, route, ctx, current) {
  root.dataset.title = "Overview";
  await fill(root, ctx);
  if (timer) clearInterval(timer);
  timer = setInterval(async () => {
    if (!current() || !document.body.contains(root)) { clearInterval(timer); timer = null; return; }
    try { await fill(root, ctx); } catch (err) { root.prepend(notice("error", err.message)); }
  }, POLL_MS);
}
