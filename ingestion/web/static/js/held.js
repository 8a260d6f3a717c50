// Removals a sweep guard held back: what they are, and why.

import { h, number, replace } from "./dom.js";

export function heldRemovals(name) {
  const body = h("div");
  const element = h("section", {
    class: "panel held-panel", "aria-labelledby": "section-held", hidden: true,
  }, h("h2", { id: "section-held" }, "Removals held back"), body);
  let shown = null;

  async function update(detail) {
    const blocked = detail.blocked_sweep;
    const key = JSON.stringify(blocked);
    if (key === shown) return;
    shown = key;
    element.hidden = !blocked;
    if (!blocked) {
      replace(body);
      return;
    }
    replace(body,
      h("p", {}, h("strong", {}, `${number(blocked.count)} entities of ${name}`),
        " were not seen by the last completed cycle",
        blocked.since_cycle ? ` (#${blocked.since_cycle})` : "",
        `, and their removal was held back: ${blocked.reason}`),
      h("p", { class: "muted" },
        "A later cycle that finds them still missing removes them; one that finds them back clears the block."));
  }

  return { element, update };
}
