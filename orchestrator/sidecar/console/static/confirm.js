// A confirmation step as a modal <dialog> of the page (not window.confirm): it names
// what is about to happen in the console's own words, is reachable by keyboard (focus
// starts on Cancel, Escape cancels), and its texts go in as text nodes like the rest.

import { h } from "./dom.js";

// Resolves true when the operator presses the action's button, false otherwise.
export function confirmAction({ title, text, action, danger = true }) {
  return new Promise((resolve) => {
    let answered = false;
    const close = (value) => {
      if (answered) return;
      answered = true;
      dialog.close();
      dialog.remove();
      resolve(value);
    };
    const cancel = h("button", { type: "button", onclick: () => close(false) }, "Cancel");
    const ok = h("button", { type: "button", class: danger ? "danger" : "primary", onclick: () => close(true) }, action);
    const dialog = h("dialog", { class: "confirm-dialog", "aria-labelledby": "confirm-title", oncancel: () => close(false) },
      h("h2", { id: "confirm-title" }, title),
      h("p", {}, text),
      h("div", { class: "actions" }, ok, cancel),
    );
    document.body.append(dialog);
    dialog.showModal();
    cancel.focus();
  });
}
