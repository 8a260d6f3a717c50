// Removals a sweep guard held back: what they are, why, and the operator's two answers.

import { confirm, fail, notify } from "./actions.js";
import { get, post } from "./api.js";
import { enc, h, number, replace, table, time, when } from "./dom.js";

const SHOWN = 10;

export function heldRemovals(name, after) {
  const base = `/incremental/providers/${enc(name)}/held-removals`;
  const body = h("div");
  const element = h("section", {
    class: "panel held-panel", "aria-labelledby": "section-held", hidden: true,
  }, h("h2", { id: "section-held" }, "Removals held back"), body);
  let shown = null;

  async function answer(kind, blocked) {
    const count = number(blocked.count);
    const approve = kind === "approve";
    const ok = await confirm(
      approve ? `Remove ${count} entities of ${name}?` : `Keep ${count} entities of ${name}?`,
      approve
        ? `Delete the ${count} entities the guard held back from the catalog now, and clear the block. This cannot be undone; a later cycle that sees them again writes them back.`
        : `Keep the ${count} entities in the catalog, counted as seen by the last completed cycle, and clear the block. A later cycle that misses them again decides anew.`,
      approve ? `Remove ${count} entities now` : "Keep them and clear the block");
    if (!ok) return;
    try {
      const result = await post(`${base}/${kind}`);
      notify(result.message);
    } catch (error) {
      fail(`${approve ? "Removing" : "Keeping"} the held-back entities of ${name} failed: ${error.message}`);
    }
    try {
      await after();
    } catch {
      // a read that fails is shown by the next refresh
    }
  }

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
    const page = await get(base, { limit: SHOWN });
    const rows = page.items.map((e) => [
      h("a", { href: `#/entities/${enc(e.ref)}` }, e.ref), time(e.updated_at, when(e.updated_at)),
    ]);
    const count = number(blocked.count);
    replace(body,
      h("p", {}, h("strong", {}, `${count} entities of ${name}`),
        " were not seen by the last completed cycle",
        blocked.since_cycle ? ` (#${blocked.since_cycle})` : "",
        `, and their removal was held back: ${blocked.reason}`),
      h("p", { class: "muted" }, blocked.held_until_approved
        ? "They wait for an operator (hold_removals_until_approved) while later cycles go on."
        : "A later cycle that finds them still missing removes them; one that finds them back clears the block. Or decide now:"),
      h("div", { class: "actions held-actions", role: "group", "aria-label": `Held-back removals of ${name}` },
        h("button", { type: "button", class: "danger", onclick: () => answer("approve", blocked) },
          `Remove ${count} entities now`),
        h("button", { type: "button", class: "secondary", onclick: () => answer("dismiss", blocked) },
          "Keep them and clear the block")),
      table("Held-back entities", ["Ref", "Written"], rows),
      page.next_after ? h("p", { class: "muted" },
        `The first ${SHOWN} are listed; ingestion held NAME lists them all.`) : null);
  }

  return { element, update };
}
