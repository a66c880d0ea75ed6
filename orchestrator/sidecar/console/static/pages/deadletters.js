// Dead letters: what the engine could not take, newest first, with why, where it was
// going and its original bytes (shown by bytesView: text as text, binary as hex; never
// parsed as HTML). Each can be redriven once, after a confirmation; "Redrive all
// matching" hands these filters to the Bulk actions page, which counts them first.
// The filters live in the hash (#/deadletters?kind=rejected), pages by next_cursor.

import { api } from "../api.js";
import { confirmAction } from "../confirm.js";
import { ago, append, bytesView, clear, field, h, notice, time } from "../dom.js";

const KINDS = ["decode", "limit", "envelope", "payload", "routing", "rejected", "expired", "unloadable", "unwritable", "refused"];
const FILTERS = ["type", "saga", "kind", "reason", "since"];
const PAGE = 50;
const COLUMNS = ["when", "type", "saga", "instance", "original destination", "kind", "reason", "size", "redriven", ""];

function filterForm(params, defs, ctx) {
  const input = (name, attrs = {}) => h("input", { type: "text", name, id: `dl-${name}`, value: params.get(name) || "", autocomplete: "off", ...attrs });
  const select = (name, values) => h("select", { name, id: `dl-${name}` },
    h("option", { value: "" }, "any"),
    values.map((v) => h("option", { value: v, selected: v === params.get(name) }, v)));
  const types = [...new Set(defs.flatMap((d) => d.consumes))].sort();
  const c = {
    type: input("type", { list: "dl-types", class: "mono" }),
    saga: select("saga", defs.map((d) => d.name)),
    kind: select("kind", KINDS),
    reason: input("reason"),
    since: input("since", { placeholder: "2026-12-07T10:00:00Z", title: "ISO 8601 (UTC unless it says otherwise) or UNIX seconds" }),
    redriven: h("input", { type: "checkbox", name: "redriven", id: "dl-redriven", checked: params.get("redriven") === "all" }),
  };
  return h("form", {
    class: "filters",
    role: "search",
    onsubmit: (e) => {
      e.preventDefault();
      const next = Object.fromEntries(FILTERS.map((k) => [k, c[k].value.trim()]));
      if (c.redriven.checked) next.redriven = "all";
      ctx.navigate(ctx.link("deadletters", [], next));
    },
  },
    field("type", c.type), h("datalist", { id: "dl-types" }, types.map((t) => h("option", { value: t }))),
    field("saga", c.saga), field("kind", c.kind), field("reason contains", c.reason), field("since", c.since),
    h("label", { class: "check" }, c.redriven, " show redriven"),
    h("button", { type: "submit", class: "primary" }, "Search"),
    h("a", { href: ctx.link("deadletters") }, "Clear"),
  );
}

function redrivenText(d) {
  return d.redriven_at ? `by ${d.redriven_by} at ${time(d.redriven_at)}` : "";
}

function row(d, ctx) {
  const status = h("td", { class: "small", "data-label": "redriven" }, redrivenText(d));
  const why = h("span", { id: `dl-why-${d.id}`, class: "muted small" }, d.redriven_at ? "already redriven" : "");
  const problem = h("div", {});
  const button = h("button", {
    type: "button",
    disabled: Boolean(d.redriven_at),
    title: d.redriven_at ? `already redriven ${redrivenText(d)}: each dead letter is redriven once` : null,
    "aria-describedby": `dl-why-${d.id}`,
    "aria-label": `Redrive dead letter ${d.id}`,
    onclick: async () => {
      const ok = await confirmAction({
        title: `Redrive dead letter ${d.id}?`,
        text: `Its original bytes (${d.bytes} bytes, ${d.type || "no type"}) go to ${d.destination} again, once.`,
        action: "Redrive",
        danger: false,
      });
      if (!ok) return;
      button.disabled = true;
      clear(problem);
      try {
        const done = await ctx.call(() => api(`/deadletters/${encodeURIComponent(d.id)}/redrive`, { method: "POST" }));
        status.textContent = `by ${done.redriven_by}, just now`;
        why.textContent = "redriven";
        tr.classList.add("redriven");
      } catch (err) {
        problem.append(notice("error", err.message));
        button.disabled = err.status === 409; // redriven meanwhile: stays disabled
        if (err.status === 409) why.textContent = "already redriven";
      }
    },
  }, "Redrive");
  const instance = d.saga && d.correlation_id
    ? h("a", { href: ctx.link("instance", [d.saga, d.correlation_id]), class: "mono" }, d.correlation_id)
    : h("span", { class: "mono" }, d.correlation_id);
  const cell = (label, attrs, ...children) => h("td", { ...attrs, "data-label": label }, ...children);
  const tr = h("tr", { class: d.redriven_at ? "dl-row redriven" : "dl-row", dataset: { id: String(d.id) } },
    cell("when", { title: time(d.at) }, ago(d.at)),
    cell("type", { class: "mono" }, d.type),
    cell("saga", {}, d.saga),
    cell("instance", {}, instance),
    cell("original destination", { class: "mono" }, d.destination),
    cell("kind", {}, h("span", { class: "badge" }, d.kind)),
    cell("reason", { class: "dl-reason" }, d.reason),
    cell("size", { class: "nowrap" }, `${d.bytes} B`),
    status,
    h("td", {}, button, " ", why, problem),
  );
  const headers = Object.entries(d.headers || {});
  const more = h("tr", { class: "dl-more" }, h("td", { colspan: COLUMNS.length },
    h("details", {},
      h("summary", {}, `headers and original bytes of dead letter ${d.id}`),
      h("dl", { class: "facts" },
        h("dt", {}, "message id"), h("dd", { class: "mono" }, d.message_id || "(none)"),
        h("dt", {}, "dead-lettered"), h("dd", {}, time(d.at)),
        h("dt", {}, "reason"), h("dd", {}, d.reason),
      ),
      h("h3", {}, "Headers"),
      headers.length
        ? h("dl", { class: "facts mono" }, headers.map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]))
        : h("p", { class: "muted small" }, "none"),
      h("h3", {}, `Original bytes (${d.bytes})`),
      bytesView(d.body),
    )));
  return [tr, more];
}

export async function render(root, route, ctx) {
  root.dataset.title = "Dead letters";
  const p = route.params;
  const query = Object.fromEntries(FILTERS.map((k) => [k, p.get(k)]));
  const [defs, page] = await Promise.all([
    api("/definitions"),
    api("/deadletters", { params: { ...query, redriven: p.get("redriven") === "all" ? null : "false", limit: PAGE, cursor: p.get("cursor") } }),
  ]);
  const filters = Object.fromEntries(FILTERS.map((k) => [k, p.get(k)]).filter(([, v]) => v));
  const bulk = ctx.link("bulk", [], {
    action: "redrive", type: filters.type, saga: filters.saga, kind: filters.kind,
    since: filters.since, reason_contains: filters.reason,
  });
  const rows = page.dead_letters;
  append(root, [
    h("h1", {}, "Dead letters"),
    h("p", { class: "muted small" },
      "Messages the engine could not take, kept with their original bytes. A redrive publishes them to their original destination again, once."),
    filterForm(p, defs, ctx),
    h("div", { class: "actions" },
      h("a", { href: bulk, class: "button-link" }, "Redrive all matching..."),
      h("span", { class: "muted small" }, "(counted first on the Bulk actions page; only those not yet redriven)"),
    ),
    rows.length
      ? h("div", { class: "table-wrap" }, h("table", { class: "deadletters" },
          h("thead", {}, h("tr", {}, COLUMNS.map((c) => h("th", {}, c)))),
          h("tbody", {}, rows.map((d) => row(d, ctx)))))
      : h("p", { class: "muted" }, p.get("cursor") ? "No older dead letters." : "No dead letters match."),
    h("nav", { class: "pager", "aria-label": "pages" },
      p.get("cursor") ? h("a", { href: ctx.link("deadletters", [], { ...filters, redriven: p.get("redriven") }) }, "Newest") : null,
      page.next_cursor
        ? h("a", { href: ctx.link("deadletters", [], { ...filters, redriven: p.get("redriven"), cursor: page.next_cursor }) }, "Older")
        : null,
      h("span", { class: "muted small" }, `${rows.length} shown`),
    ),
  ]);
}
