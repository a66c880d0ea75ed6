// Instances: GET /sagas's filters as a search form, a page of results, the next page by
// its cursor. The search lives in the hash (#/instances?saga=order&status=compensated),
// so a search is a link an operator can share, reload or go back to; submitting the
// form only navigates, and the page renders from the hash alone.

import { ApiError, api } from "../api.js";
import { ago, clear, field, h, notice, statusBadge, time } from "../dom.js";

const STATUSES = ["running", "completed", "compensated", "compensation_failed", "aborted"];
const UNITS = { m: ["minutes", 60000], h: ["hours", 3600000] };
const PAGE_SIZES = [25, 50, 100, 200];
const DEFAULT_LIMIT = 50;

// "30m" / "2h" -> {n: 30, unit: "m"}; anything else (a typo in a pasted link) -> null.
function parseLast(text) {
  const m = /^(\d+)([mh])$/.exec(text || "");
  return m && Number(m[1]) > 0 ? { n: Number(m[1]), unit: m[2] } : null;
}

// An ISO time in the hash, as a datetime-local input shows it (the browser's own zone).
function toLocalInput(iso) {
  const d = new Date(iso || "");
  if (!iso || Number.isNaN(d.getTime())) return "";
  const p = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}T${p(d.getHours())}:${p(d.getMinutes())}`;
}

function fromLocalInput(value) {
  if (!value) return "";
  const d = new Date(value); // "YYYY-MM-DDTHH:MM" without a zone is local time
  return Number.isNaN(d.getTime()) ? "" : d.toISOString();
}

// The hash's search, as the API's query: "updated in the last N" becomes updated_after
// (the later of it and an explicit "after", both narrowing the same bound).
export function apiQuery(params, now = Date.now()) {
  const q = {};
  for (const key of ["saga", "status", "state", "correlation_id", "updated_before", "cursor"]) {
    if (params.get(key)) q[key] = params.get(key);
  }
  if (params.get("stuck") === "true") q.stuck = "true";
  let after = params.get("updated_after") || "";
  const last = parseLast(params.get("last"));
  if (last) {
    const since = new Date(now - last.n * UNITS[last.unit][1]).toISOString();
    if (!after || new Date(after).getTime() < new Date(since).getTime()) after = since;
  }
  if (after) q.updated_after = after;
  const limit = Number(params.get("limit"));
  q.limit = PAGE_SIZES.includes(limit) ? limit : DEFAULT_LIMIT;
  if (q.state && !q.saga) delete q.state; // a state names one saga's states: not alone
  return q;
}

function option(value, label, selected) {
  return h("option", { value, selected: selected === value }, label);
}

function stateOptions(select, definition, chosen) {
  clear(select).append(option("", "any state", chosen));
  if (definition) for (const s of definition.states) select.append(option(s, s, chosen));
  select.disabled = !definition;
  select.title = definition ? "" : "choose a saga first: states belong to one saga";
}

function searchForm(params, definitions, ctx) {
  const byName = Object.fromEntries(definitions.map((d) => [d.name, d]));
  const last = parseLast(params.get("last"));
  const saga = h("select", { name: "saga" }, option("", "any saga", params.get("saga") || ""),
    definitions.map((d) => option(d.name, `${d.name} (${d.kind})`, params.get("saga") || "")));
  const status = h("select", { name: "status" }, option("", "any status", params.get("status") || ""),
    STATUSES.map((s) => option(s, s, params.get("status") || "")));
  const state = h("select", { name: "state" });
  stateOptions(state, byName[params.get("saga")], params.get("state") || "");
  saga.addEventListener("change", () => stateOptions(state, byName[saga.value], ""));
  const cid = h("input", { name: "correlation_id", type: "search", value: params.get("correlation_id") || "",
    placeholder: "exact id", autocomplete: "off", spellcheck: "false" });
  const stuck = h("input", { name: "stuck", type: "checkbox", checked: params.get("stuck") === "true" });
  const lastN = h("input", { name: "last", type: "number", min: "1", step: "1", inputmode: "numeric",
    value: last ? String(last.n) : "", class: "narrow", "aria-label": "updated in the last (number)" });
  const lastUnit = h("select", { name: "last_unit", "aria-label": "unit" },
    Object.entries(UNITS).map(([k, [label]]) => option(k, label, last ? last.unit : "m")));
  const after = h("input", { name: "updated_after", type: "datetime-local", value: toLocalInput(params.get("updated_after")) });
  const before = h("input", { name: "updated_before", type: "datetime-local", value: toLocalInput(params.get("updated_before")) });
  const limit = h("select", { name: "limit" },
    PAGE_SIZES.map((n) => option(String(n), String(n), String(apiQuery(params).limit))));

  const submit = (e) => {
    e.preventDefault();
    const n = Number(lastN.value);
    ctx.navigate(ctx.link("instances", [], {
      saga: saga.value,
      status: status.value,
      state: saga.value ? state.value : "",
      correlation_id: cid.value.trim(),
      stuck: stuck.checked ? "true" : "",
      last: lastN.value && Number.isInteger(n) && n > 0 ? `${n}${lastUnit.value}` : "",
      updated_after: fromLocalInput(after.value),
      updated_before: fromLocalInput(before.value),
      limit: limit.value === String(DEFAULT_LIMIT) ? "" : limit.value,
    }));
  };
  return h("form", { class: "filters instances-search", role: "search", "aria-label": "search instances", onsubmit: submit },
    field("saga", saga),
    field("status", status),
    field("state", state),
    field("correlation id", cid),
    h("label", { class: "field check" }, h("span", {}, "stuck only"), stuck),
    h("div", { class: "field" }, h("span", { id: "last-label" }, "updated in the last"),
      h("div", { class: "inline", role: "group", "aria-labelledby": "last-label" }, lastN, lastUnit)),
    field("updated after", after),
    field("updated before", before),
    field("per page", limit),
    h("div", { class: "actions" },
      h("button", { type: "submit", class: "primary" }, "Search"),
      h("a", { href: ctx.link("instances") }, "Clear")),
  );
}

function resultsTable(instances, ctx) {
  return h("div", { class: "table-wrap" }, h("table", { class: "instances" },
    h("thead", {}, h("tr", {}, ["correlation id", "saga", "state", "status", "updated", "failure"].map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", {}, instances.map((i) => h("tr", { class: i.stuck ? "stuck" : null },
      h("td", { class: "mono" }, h("a", { href: ctx.link("instance", [i.saga, i.correlation_id]) }, i.correlation_id)),
      h("td", {}, i.saga),
      h("td", { class: "mono" }, i.state),
      h("td", {}, statusBadge(i.status, i.stuck)),
      h("td", { title: time(i.updated_at) }, h("time", { datetime: i.updated_at }, ago(i.updated_at))),
      h("td", { class: "failure" }, i.failure || "")))),
  ));
}

function pager(params, page, ctx) {
  const rest = Object.fromEntries([...params.entries()].filter(([k]) => k !== "cursor"));
  const first = params.get("cursor")
    ? h("a", { href: ctx.link("instances", [], rest) }, "First page") : null;
  const next = page.next_cursor
    ? h("a", { href: ctx.link("instances", [], { ...rest, cursor: page.next_cursor }), rel: "next" }, "Next page")
    : h("span", { class: "muted small" }, "last page");
  return h("nav", { class: "pager", "aria-label": "pages" }, first, next);
}

export async function render(root, route, ctx) {
  root.dataset.title = "Instances";
  const params = route.params;
  const definitions = await api("/definitions");
  const query = apiQuery(params);
  const out = h("section", { "aria-label": "results", "aria-live": "polite" });
  root.append(h("h1", {}, "Instances"), searchForm(params, definitions, ctx), out);
  let page;
  try {
    page = await api("/sagas", { params: query });
  } catch (err) {
    if (!(err instanceof ApiError) || err.status === 401 || err.status === 403) throw err;
    out.append(notice("error", err.message)); // a bad filter: say so beside the form
    return;
  }
  const where = params.get("cursor") ? "on this page" : "";
  if (!page.instances.length) {
    out.append(notice("info", params.get("cursor")
      ? "No more instances match this search." : "No instances match this search."));
    if (params.get("cursor")) out.append(pager(params, page, ctx));
    return;
  }
  const stuck = page.instances.filter((i) => i.stuck).length;
  out.append(
    h("p", { class: "muted small" },
      `${page.instances.length} instance${page.instances.length === 1 ? "" : "s"} ${where}`.trim(),
      stuck ? `, ${stuck} stuck (highlighted)` : "",
      `; newest update first, as of ${time(new Date().toISOString())}`),
    resultsTable(page.instances, ctx),
    pager(params, page, ctx),
  );
}
