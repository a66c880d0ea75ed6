// The console's shell: a hash router over the pages, the token prompt, errors.
// Every page is a module under pages/ exporting render(root, route, ctx); everything it
// shows comes from the admin API (api.js), so the console can show nothing the API
// would not.

import { ApiError, api, setToken, token } from "./api.js";
import { clear, h, notice } from "./dom.js";

const PAGES = {
  overview: () => import("./pages/overview.js"),
  instances: () => import("./pages/instances.js"),
  instance: () => import("./pages/instance.js"),
  bulk: () => import("./pages/bulk.js"),
  deadletters: () => import("./pages/deadletters.js"),
  definitions: () => import("./pages/definitions.js"),
};

// "#/instance/order/a%2Fb?x=1" -> {page: "instance", parts: ["order", "a/b"], params}
export function parseRoute(hash) {
  const raw = (hash || "").replace(/^#\/?/, "");
  const [path, query = ""] = raw.split("?", 2);
  const parts = path.split("/").filter((p) => p !== "").map(decodeURIComponent);
  const page = parts.shift() || "overview";
  return { page, parts, params: new URLSearchParams(query) };
}

export function link(page, parts = [], params = {}) {
  const path = [page, ...parts.map((p) => encodeURIComponent(p))].join("/");
  const query = new URLSearchParams(Object.entries(params).filter(([, v]) => v !== null && v !== undefined && v !== "")).toString();
  return `#/${path}${query ? `?${query}` : ""}`;
}

let generation = 0; // a slower earlier render must not overwrite a newer page

const ctx = {
  link,
  navigate(hash) {
    if (window.location.hash === hash) render();
    else window.location.hash = hash;
  },
  rerender: () => render(),
  // Runs an API call; a 401 or 403 asks for a (better) token and runs it again.
  async call(fn) {
    try {
      return await fn();
    } catch (err) {
      if (err instanceof ApiError && (err.status === 401 || err.status === 403)) {
        const ok = await askToken(err);
        if (ok) return ctx.call(fn);
      }
      throw err;
    }
  },
};

function showWho() {
  const who = document.getElementById("who");
  clear(who);
  if (token()) {
    who.append(
      h("span", { class: "muted" }, "token set for this tab "),
      h("button", { type: "button", class: "link", onclick: () => { setToken(""); render(); } }, "Forget token"),
    );
  }
}

// A modal form: the token goes to sessionStorage only. Resolves true once one is given,
// false when cancelled or closed by a navigation (render() closes every token dialog).
function askToken(err) {
  return new Promise((resolve) => {
    let given = false;
    const input = h("input", { type: "password", id: "token", name: "token", autocomplete: "off", required: true });
    const form = h(
      "form",
      { method: "dialog", onsubmit: (e) => { e.preventDefault(); setToken(input.value.trim()); given = true; dialog.close(); } },
      h("h2", {}, err.status === 403 ? "This action needs the admin token" : "This sidecar wants a token"),
      h("p", { class: "muted" }, err.message),
      h("label", { for: "token" }, "Token"),
      input,
      h("p", { class: "muted small" }, "Kept for this browser tab only (sessionStorage), never in a URL."),
      h("div", { class: "actions" },
        h("button", { type: "submit", class: "primary" }, "Use token"),
        h("button", { type: "button", onclick: () => dialog.close() }, "Cancel")),
    );
    const dialog = h("dialog", { class: "token-dialog", "aria-label": "token" }, form);
    dialog.addEventListener("close", () => { dialog.remove(); showWho(); resolve(given); });
    document.body.append(dialog);
    dialog.showModal();
    input.focus();
  });
}

async function render() {
  const mine = ++generation;
  for (const open of document.querySelectorAll("dialog.token-dialog")) open.close(); // asked by a page left
  const busy = document.getElementById("main");
  busy.setAttribute("aria-busy", "true");
  const route = parseRoute(window.location.hash);
  const section = route.page === "instance" ? "instances" : route.page;
  for (const a of document.querySelectorAll("nav a")) {
    if (a.dataset.section === section) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  showWho();
  const main = document.getElementById("main");
  const loader = PAGES[route.page];
  if (!loader) {
    clear(main).append(notice("error", `No page ${route.page}.`), h("a", { href: "#/overview" }, "Overview"));
    return;
  }
  const root = h("div", { class: `page page-${route.page}` });
  try {
    const module = await loader();
    await ctx.call(() => module.render(root, route, ctx, () => mine === generation));
  } catch (err) {
    root.append(notice("error", err instanceof ApiError ? err.message : `The console failed: ${err.message}`));
  }
  if (mine === generation) {
    main.removeAttribute("aria-busy");
    clear(main).append(root);
    document.title = `${root.dataset.title || route.page} - sagawire`;
  }
}

window.addEventListener("hashchange", render);
window.addEventListener("DOMContentLoaded", render);
export { api };
