// Definitions: every loaded saga as the engine runs it (GET /definitions): its diagram,
// states, steps with their compensations, timeouts and SLOs, what it consumes and
// produces, and where those messages travel (the channels of GET /asyncapi.json whose
// messages it consumes or produces, on each broker the document names).
// #/definitions shows them all; #/definitions/<saga> one of them.

import { api } from "../api.js";
import { diagram } from "../diagram.js";
import { append, h, notice } from "../dom.js";

function seconds(value) {
  if (value === null || value === undefined) return "";
  return value >= 120 ? `${value} s (${+(value / 60).toFixed(1)} min)` : `${value} s`;
}

function list(values, cls = "mono") {
  return values && values.length ? h("span", { class: cls }, values.join(", ")) : h("span", { class: "muted" }, "none");
}

function stepsTable(def) {
  const flow = def.kind === "flow";
  return h("div", { class: "table-wrap" }, h("table", { class: "steps" },
    h("thead", {}, h("tr", {}, ["step", "command", "success", "failure", "compensation", flow ? "deadline" : "timeout", "attempts", "after", "SLO"].map((c) => h("th", {}, c)))),
    h("tbody", {}, def.steps.map((s) => h("tr", {},
      h("th", { scope: "row" }, s.name),
      h("td", { class: "mono" }, s.command || h("span", { class: "muted", title: "a choreography's step: the saga watches for its events, it sends no command" }, "observed")),
      h("td", {}, list(s.success)),
      h("td", {}, list(s.failure)),
      h("td", { class: "mono" }, s.compensation
        ? [s.compensation, s.compensated_by ? h("span", { class: "muted" }, ` -> ${s.compensated_by}`) : null]
        : h("span", { class: "muted" }, "none")),
      h("td", {}, seconds(s.timeout)),
      h("td", {}, String(s.attempts ?? "")),
      h("td", {}, list(s.after)),
      h("td", {}, def.slo[s.name] !== undefined ? seconds(def.slo[s.name]) : ""),
    ))),
  ));
}

function transitionsTable(def) {
  if (!def.transitions.length) return null;
  return h("details", {},
    h("summary", {}, `transitions (${def.transitions.length})`),
    h("div", { class: "table-wrap" }, h("table", { class: "transitions" },
      h("thead", {}, h("tr", {}, ["from", "on", "to", "sends", "timers"].map((c) => h("th", {}, c)))),
      h("tbody", {}, def.transitions.map((t) => h("tr", {},
        h("td", { class: "mono" }, t.from),
        h("td", { class: "mono" }, t.on, t.guarded ? h("span", { class: "muted" }, " [guarded]") : null),
        h("td", { class: "mono" }, t.to),
        h("td", {}, list(t.sends)),
        h("td", { class: "small" }, (t.timers || []).map((x) => Object.entries(x).map(([k, v]) => `${k} ${v}`)).flat().join(", ")),
      ))))));
}

function ref(value) {
  return value && value.$ref ? value.$ref.split("/").pop() : null;
}

// The document's channels as {servers: [{name, label}], byMessage: {message: {server: channel}}}.
function channelsOf(doc) {
  const servers = Object.entries(doc.servers || {}).map(([name, s]) => ({
    name,
    label: s.host ? `${s.protocol || name}://${s.host}` : s.protocol || name,
  }));
  const byMessage = {};
  for (const [id, ch] of Object.entries(doc.channels || {})) {
    const on = (ch.servers || []).map(ref).filter(Boolean);
    for (const [key, msg] of Object.entries(ch.messages || {})) {
      const message = ref(msg) || key;
      byMessage[message] = byMessage[message] || {};
      for (const server of on.length ? on : servers.map((s) => s.name)) {
        byMessage[message][server] = { id, address: ch.address };
      }
    }
  }
  return { servers, byMessage };
}

// One row per message the saga consumes or produces; a column per broker (server) the
// document names, with the channel's address there.
function channelsTable(def, channels) {
  if (channels === null) return null;
  const { servers, byMessage } = channels;
  const rows = [
    ...def.consumes.map((m) => ["consumes", m]),
    ...def.produces.filter((m) => !def.consumes.includes(m)).map((m) => ["produces", m]),
  ].map(([dir, m]) => [def.consumes.includes(m) && def.produces.includes(m) ? "consumes, produces" : dir, m]);
  const known = rows.filter(([, m]) => byMessage[m]);
  if (!known.length) return h("p", { class: "muted" }, "No channel in the AsyncAPI document carries its messages.");
  return h("div", { class: "table-wrap" }, h("table", { class: "channels" },
    h("thead", {}, h("tr", {},
      h("th", {}, ""), h("th", {}, "message"),
      servers.map((s) => h("th", { title: s.label }, s.name, h("span", { class: "muted small" }, ` ${s.label}`))))),
    h("tbody", {}, known.map(([dir, m]) => h("tr", {},
      h("td", {}, dir),
      h("th", { scope: "row", class: "mono" }, m),
      servers.map((s) => {
        const ch = byMessage[m][s.name];
        return h("td", { class: "mono", title: ch ? `channel ${ch.id}` : null }, ch ? ch.address : h("span", { class: "muted" }, "-"));
      }),
    )))));
}

function section(def, channels, ctx) {
  const final = def.final || {};
  return h("section", { class: "card definition", id: `saga-${def.name}`, "aria-label": `saga ${def.name}` },
    h("h2", {}, h("a", { href: ctx.link("definitions", [def.name]) }, def.name), " ",
      h("span", { class: "muted small" }, def.kind === "flow" ? "choreography (flow)" : def.kind)),
    diagram(def.mermaid, `${def.kind === "flow" ? "flow" : "state"} diagram of saga ${def.name}`),
    h("div", { class: "definition-facts" },
      h("dl", { class: "facts" },
        h("dt", {}, "kind"), h("dd", {}, def.kind),
        h("dt", {}, "version"), h("dd", { class: "mono", title: "a digest of the definition" }, def.version),
        h("dt", {}, "states"), h("dd", { class: "mono" }, def.states.map((s, i) => [i ? ", " : "", final[s] ? h("b", { title: `final: ${final[s]}` }, s) : s])),
        h("dt", {}, "started by"), h("dd", {}, list(def.initial_events)),
        h("dt", {}, "consumes"), h("dd", {}, list(def.consumes)),
        h("dt", {}, "produces"), h("dd", {}, list(def.produces)),
        h("dt", {}, "SLOs"), h("dd", {}, Object.keys(def.slo).length
          ? Object.entries(def.slo).map(([k, v]) => `${k}: ${seconds(v)}`).join(", ")
          : h("span", { class: "muted" }, "none (the sidecar's default, if set)")),
        h("dt", {}, "instances"), h("dd", {}, h("a", { href: ctx.link("instances", [], { saga: def.name }) }, "list")),
      ),
    ),
    def.steps.length ? [h("h3", {}, "Steps"), stepsTable(def)] : null,
    transitionsTable(def),
    h("h3", {}, "Channels"),
    channelsTable(def, channels),
  );
}

export async function render(root, route, ctx) {
  const only = route.parts[0] || null;
  root.dataset.title = only ? `Definition ${only}` : "Definitions";
  const [defs, doc] = await Promise.all([
    api("/definitions"),
    api("/asyncapi.json").catch((err) => ({ error: err })),
  ]);
  const channels = doc.error ? null : channelsOf(doc);
  const shown = only ? defs.filter((d) => d.name === only) : defs;
  append(root, [
    h("h1", {}, only ? `Definition: ${only}` : "Definitions"),
    h("nav", { class: "actions", "aria-label": "sagas" },
      only ? h("a", { href: ctx.link("definitions") }, "All sagas") : null,
      defs.map((d) => (d.name === only ? h("b", {}, d.name) : h("a", { href: ctx.link("definitions", [d.name]) }, d.name))),
    ),
    doc.error ? notice("error", `The AsyncAPI document could not be read: ${doc.error.message}`) : null,
    only && !shown.length ? notice("error", `No saga named ${only} is loaded.`) : null,
    shown.map((d) => section(d, channels, ctx)),
  ]);
}
