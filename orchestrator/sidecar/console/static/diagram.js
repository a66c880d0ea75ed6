// Diagrams: Mermaid text from the API (GET /definitions, an instance's "diagram") drawn
// as SVG by the Mermaid shipped in vendor/ (loaded once, on the first diagram). Its
// securityLevel "strict" sanitises what it draws; the text itself comes from the
// loaded definitions, not from messages.

import { h } from "./dom.js";

let loading = null;

function mermaid() {
  if (window.mermaid) return Promise.resolve(window.mermaid);
  if (!loading) {
    loading = new Promise((resolve, reject) => {
      const script = document.createElement("script");
      script.src = new URL("vendor/mermaid.min.js", document.baseURI).href;
      script.onload = () => {
        window.mermaid.initialize({ startOnLoad: false, securityLevel: "strict", theme: "neutral", flowchart: { htmlLabels: false } });
        resolve(window.mermaid);
      };
      script.onerror = () => reject(new Error("could not load the diagram library"));
      document.head.append(script);
    });
  }
  return loading;
}

let counter = 0;

// A container that fills with the drawn diagram (or, failing that, shows the text).
export function diagram(text, label = "state diagram") {
  const box = h("figure", { class: "diagram", role: "img", "aria-label": label });
  const id = `mermaid-${++counter}`;
  mermaid()
    .then((m) => m.render(id, text))
    .then(({ svg }) => {
      const doc = new DOMParser().parseFromString(svg, "image/svg+xml");
      const node = doc.documentElement;
      if (node && node.nodeName.toLowerCase() === "svg") box.append(document.importNode(node, true));
      else box.append(h("pre", {}, text));
      box.dataset.drawn = "true";
    })
    .catch((err) => {
      box.append(h("p", { class: "notice error" }, `diagram not drawn: ${err.message || err}`), h("pre", {}, text));
      box.dataset.drawn = "error";
    });
  return box;
}
