// Bulk actions: abort, retry, resume (instances by the filters of GET /sagas) or redrive
// (dead letters by those of GET /deadletters). The operator counts first (the API's
// dry run), and only that count can be run: changing a filter takes it back. The run
// asks once more, naming the count and the action, then shows the job's progress,
// polled every second, with a Cancel while it runs. The filters come pre-filled from
// the hash (#/bulk?saga=order&status=running), so other pages link here with theirs;
// the running job's id goes into the hash too, so a reload finds it again.

import { api } from "../api.js";
import { confirmAction } from "../confirm.js";
import { append, clear, field, h, notice, time } from "../dom.js";

const POLL_MS = 1000;
const ACTIONS = {
  abort: "Abort",
  retry: "Retry",
  resume: "Resume",
  redrive: "Redrive",
};
const STATUSES = ["running", "completed", "compensated", "compensation_failed", "aborted"];
const KINDS = ["decode", "limit", "envelope", "payload", "routing", "rejected", "expired", "unloadable", "unwritable", "refused"];
const INSTANCE_FILTERS = ["saga", "status", "state", "correlation_id", "stuck", "updated_after", "updated_before", "limit"];
const REDRIVE_FILTERS = ["type", "saga", "kind", "since", "reason_contains"];
const DRY_RUN_CAP = 100000; // the API counts at most this many
const ENDED = new Set(["done", "cancelled", "failed"]);

function options(values, chosen, any = "any") {
  return [h("option", { value: "" }, any), ...values.map((v) => h("option", { value: v, selected: v === chosen }, v))];
}

function text(name, value, attrs = {}) {
  return h("input", { type: "text", name, id: `bulk-${name}`, value: value || "", autocomplete: "off", ...attrs });
}

const TIME_HINT = "ISO 8601 (UTC unless it says otherwise) or UNIX seconds";

// The form's controls, pre-filled from the hash; returns them by name.
function controls(params, defs) {
  const sagas = defs.map((d) => d.name);
  const c = {};
  const chosenAction = ACTIONS[params.get("action")] ? params.get("action")
    : REDRIVE_FILTERS.some((k) => k !== "saga" && params.get(k)) ? "redrive" : "abort";
  c.action = Object.keys(ACTIONS).map((a) => h("input", { type: "radio", name: "action", value: a, id: `bulk-action-${a}`, checked: a === chosenAction }));
  c.compensate = h("input", { type: "checkbox", name: "compensate", id: "bulk-compensate", checked: params.get("compensate") !== "false" });
  c.saga = h("select", { name: "saga", id: "bulk-saga" }, options(sagas, params.get("saga") || ""));
  c.status = h("select", { name: "status", id: "bulk-status" }, options(STATUSES, params.get("status") || ""));
  c.state = h("select", { name: "state", id: "bulk-state" });
  c.correlation_id = text("correlation_id", params.get("correlation_id"), { class: "mono" });
  c.stuck = h("input", { type: "checkbox", name: "stuck", id: "bulk-stuck", checked: params.get("stuck") === "true" });
  c.updated_after = text("updated_after", params.get("updated_after"), { placeholder: "2026-12-07T10:00:00Z", title: TIME_HINT });
  c.updated_before = text("updated_before", params.get("updated_before"), { placeholder: "2026-12-07T10:00:00Z", title: TIME_HINT });
  c.limit = h("input", { type: "number", name: "limit", id: "bulk-limit", min: 1, step: 1, value: params.get("limit") || "", placeholder: "all" });
  const types = [...new Set(defs.flatMap((d) => d.consumes))].sort();
  c.type = text("type", params.get("type"), { list: "bulk-types", class: "mono" });
  c.typeList = h("datalist", { id: "bulk-types" }, types.map((t) => h("option", { value: t })));
  c.redriveSaga = h("select", { name: "redrive_saga", id: "bulk-redrive-saga" }, options(sagas, params.get("saga") || ""));
  c.kind = h("select", { name: "kind", id: "bulk-kind" }, options(KINDS, params.get("kind") || ""));
  c.since = text("since", params.get("since"), { placeholder: "2026-12-07T10:00:00Z", title: TIME_HINT });
  c.reason_contains = text("reason_contains", params.get("reason_contains"));
  c.reason = h("input", { type: "text", name: "reason", id: "bulk-reason", value: params.get("reason") || "", maxlength: 2000, placeholder: "why" });
  c.fillStates = () => {
    const def = defs.find((d) => d.name === c.saga.value);
    const wanted = c.state.value || params.get("state") || "";
    clear(c.state).append(...options(def ? def.states : [], wanted, def ? "any" : "any (choose a saga first)"));
    c.state.disabled = !def;
  };
  c.fillStates();
  return c;
}

function chosenAction(c) {
  return c.action.find((r) => r.checked).value;
}

// The request's body: only the filters the chosen action takes, empty ones left out.
function request(c) {
  const action = chosenAction(c);
  const body = { reason: c.reason.value.trim() };
  const names = action === "redrive" ? REDRIVE_FILTERS : INSTANCE_FILTERS;
  for (const name of names) {
    const control = action === "redrive" && name === "saga" ? c.redriveSaga : c[name];
    if (control.disabled) continue;
    if (control.type === "checkbox") {
      if (control.checked) body[name] = true;
    } else if (control.value.trim()) {
      body[name] = control.type === "number" ? Number(control.value) : control.value.trim();
    }
  }
  if (action === "abort") body.compensate = c.compensate.checked;
  return { action, body };
}

// The hash that would show this form again (and, with a job, its progress).
function hashFor(ctx, c, job = null) {
  const { action, body } = request(c);
  const params = { action, ...body };
  if (params.stuck) params.stuck = "true";
  if (action === "abort") params.compensate = body.compensate ? null : "false";
  if (job) params.job = job;
  return ctx.link("bulk", [], params);
}

function what(action, n) {
  const noun = action === "redrive" ? (n === 1 ? "dead letter" : "dead letters") : (n === 1 ? "instance" : "instances");
  return `${n} ${noun}`;
}

function described(action, body) {
  if (action === "abort") return body.compensate ? "abort (compensating what they did)" : "abort without compensating";
  if (action === "redrive") return "redrive to their original destinations";
  return action;
}

// The job's progress, polled until it ends or the operator leaves the page.
function progressView(ctx, current, jobId, onEnd) {
  const box = h("section", { class: "card bulk-job", "aria-label": "bulk action progress", "aria-live": "polite" });
  let timer = null;
  let problem = null; // why a Cancel was refused: stays on screen with the job
  let latest = null; // the job as last seen: a poll may answer while a Cancel is out

  const show = (job) => {
    if (latest && ENDED.has(latest.state) && !ENDED.has(job.state)) return; // a stale answer
    latest = job;
    const total = job.matched ?? 0;
    const handled = job.done + job.refused;
    const running = job.state === "running";
    const cancel = h("button", {
      type: "button",
      class: "danger",
      onclick: async () => {
        cancel.disabled = true;
        try {
          show(await ctx.call(() => api(`/bulk/${encodeURIComponent(job.id)}/cancel`, { method: "POST" })));
        } catch (err) {
          problem = err.message;
          show(latest);
        }
      },
    }, "Cancel");
    append(clear(box), [
      h("h2", {}, `${ACTIONS[job.action] || job.action}: job ${job.id} `, h("span", { class: `badge job-${job.state}` }, job.state)),
      h("progress", { max: Math.max(total, 1), value: total ? Math.min(handled, total) : (ENDED.has(job.state) ? 1 : 0), "aria-label": "progress" }),
      h("dl", { class: "facts" },
        h("dt", {}, "matched"), h("dd", { "data-count": "matched" }, job.matched === null ? "counting..." : String(job.matched)),
        h("dt", {}, "done"), h("dd", { "data-count": "done" }, String(job.done)),
        h("dt", {}, "refused"), h("dd", { "data-count": "refused" }, String(job.refused)),
        h("dt", {}, "by"), h("dd", {}, job.by),
        job.reason ? [h("dt", {}, "reason"), h("dd", {}, job.reason)] : null,
        h("dt", {}, "started"), h("dd", {}, time(job.started_at)),
        job.finished_at ? [h("dt", {}, "finished"), h("dd", {}, time(job.finished_at))] : null,
      ),
      job.refused ? h("p", { class: "muted small" }, "Refused: the instance's status did not allow the action when its turn came (each one's history says why).") : null,
      job.errors.length ? h("div", {}, h("h3", {}, "Errors"), h("ul", { class: "bulk-errors" }, job.errors.map((e) => h("li", {}, e)))) : null,
      problem ? notice("error", problem) : null,
      running ? h("div", { class: "actions" }, cancel) : null,
    ]);
    if (!running && timer) { clearInterval(timer); timer = null; }
    if (!running) onEnd(job);
  };

  const poll = async () => {
    // current() turns false once the operator has left (or reloaded) this page; the
    // box is not in the document yet on the first poll, while the page is built.
    if (!current()) { clearInterval(timer); timer = null; return; }
    try {
      show(await ctx.call(() => api(`/bulk/${encodeURIComponent(jobId)}`)));
    } catch (err) {
      clearInterval(timer); timer = null;
      clear(box).append(notice("error", err.message));
      onEnd(null);
    }
  };
  return {
    box,
    start(job) {
      if (job) show(job);
      if (!job || job.state === "running") {
        timer = setInterval(poll, POLL_MS);
        if (!job) poll();
      }
    },
  };
}

export async function render(root, route, ctx, current) {
  root.dataset.title = "Bulk actions";
  const defs = await api("/definitions");
  const c = controls(route.params, defs);
  const counted = h("p", { class: "bulk-count", role: "status", "aria-live": "polite" });
  const countButton = h("button", { type: "submit", class: "primary" }, "Count");
  const runButton = h("button", { type: "button", class: "danger", disabled: true, "aria-describedby": "bulk-run-why" }, "Run");
  const runWhy = h("span", { id: "bulk-run-why", class: "muted small" }, "Count first: only a counted selection can be run.");
  const jobArea = h("div", { class: "bulk-job-area" });
  let count = null; // {action, body, matched}: what "Run" will do

  const instanceFilters = h("fieldset", { class: "filters-set" },
    h("legend", {}, "Which instances"),
    h("div", { class: "filters" },
      field("saga", c.saga), field("status", c.status), field("state", c.state),
      field("correlation id", c.correlation_id),
      field("updated after", c.updated_after), field("updated before", c.updated_before),
      field("at most", c.limit),
      h("label", { class: "check" }, c.stuck, " only stuck ones"),
    ));
  const redriveFilters = h("fieldset", { class: "filters-set" },
    h("legend", {}, "Which dead letters (not yet redriven)"),
    h("div", { class: "filters" },
      field("type", c.type), c.typeList, field("saga", c.redriveSaga),
      field("kind", c.kind), field("since", c.since), field("reason contains", c.reason_contains),
    ));
  const reasonField = field("reason (recorded in each one's history)", c.reason);
  const compensateLabel = h("label", { class: "check" }, c.compensate, " compensate what they did (uncheck to abort as they are)");

  const uncount = () => {
    count = null;
    runButton.disabled = true;
    runButton.textContent = "Run";
    runWhy.textContent = "Count first: only a counted selection can be run.";
    clear(counted);
  };
  const layout = () => {
    const action = chosenAction(c);
    instanceFilters.hidden = action === "redrive";
    redriveFilters.hidden = action !== "redrive";
    compensateLabel.hidden = action !== "abort";
    countButton.textContent = action === "redrive" ? "Count dead letters" : "Count instances";
    reasonField.firstChild.textContent = action === "redrive" ? "reason (kept with the job)" : "reason (recorded in each one's history)";
  };

  const form = h("form", {
    class: "bulk-form",
    onsubmit: async (e) => {
      e.preventDefault();
      uncount();
      const { action, body } = request(c);
      countButton.disabled = true;
      counted.textContent = "Counting...";
      try {
        const result = await ctx.call(() => api(`/bulk/${action}`, { method: "POST", params: { dry_run: "true" }, body }));
        const n = result.matched;
        const shown = n >= DRY_RUN_CAP ? `at least ${n}` : String(n);
        counted.textContent = `${shown} ${what(action, n).replace(/^\d+ /, "")} ${n === 1 ? "matches" : "match"}`;
        if (n > 0) {
          count = { action, body, matched: n };
          runButton.disabled = false;
          runButton.textContent = `Run on ${n}`;
          runWhy.textContent = `${described(action, body)}`;
        } else {
          runWhy.textContent = "Nothing to run on.";
        }
      } catch (err) {
        clear(counted).append(notice("error", err.message));
      } finally {
        countButton.disabled = false;
      }
    },
    oninput: (e) => {
      if (e.target === c.saga) c.fillStates();
      if (e.target.name === "action") layout();
      uncount();
    },
  },
    h("fieldset", { class: "filters-set" },
      h("legend", {}, "Action"),
      h("div", { class: "actions" },
        c.action.map((radio) => h("label", { class: "check", for: radio.id }, radio, ` ${ACTIONS[radio.value].toLowerCase()}`)),
        compensateLabel),
    ),
    instanceFilters,
    redriveFilters,
    reasonField,
    h("div", { class: "actions" }, countButton, runButton, runWhy),
    counted,
  );

  runButton.addEventListener("click", async () => {
    if (!count) return;
    const { action, body, matched } = count;
    const ok = await confirmAction({
      title: `${ACTIONS[action]} ${what(action, matched)}?`,
      text: `This will ${described(action, body)} what these filters match: ${what(action, matched)} when counted;`
        + " the job acts on those that still match as it goes."
        + (body.reason ? ` Reason: ${body.reason}` : " No reason given."),
      action: `${ACTIONS[action]} ${what(action, matched)}`,
    });
    if (!ok) return;
    runButton.disabled = true;
    try {
      const job = await ctx.call(() => api(`/bulk/${action}`, { method: "POST", body }));
      history.replaceState(null, "", hashFor(ctx, c, job.id));
      follow(job.id, job);
    } catch (err) {
      clear(jobArea).append(notice("error", err.message));
      runButton.disabled = false;
    }
  });

  const follow = (jobId, job = null) => {
    countButton.disabled = true;
    const view = progressView(ctx, current, jobId, () => {
      countButton.disabled = false;
      uncount();
    });
    clear(jobArea).append(view.box);
    view.start(job);
  };

  layout();
  root.append(
    h("h1", {}, "Bulk actions"),
    h("p", { class: "muted small" },
      "Choose the action and the filters, count what they match, then run on that count. Each instance is acted on as the one-instance buttons do, and may be refused on its own."),
    form,
    jobArea,
  );
  const jobId = route.params.get("job");
  if (jobId) follow(jobId);
}
