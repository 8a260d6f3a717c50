// The overview: every provider, where it stands, its open cycle, and the health of the whole.

import { actionButtons } from "./actions.js";
import { get } from "./api.js";
import { enc, h, number, replace } from "./dom.js";
import { badge, cycleProgress, healthSummary, heldBack, lastError, stepFacts } from "./status.js";

export function overview(main) {
  const heading = h("h1", { tabindex: "-1" }, "Providers");
  const summary = h("section", { class: "summary", "aria-label": "Health summary" });
  const list = h("div", { class: "cards" });
  replace(main, heading, summary, list);
  const cards = new Map();

  function card(name) {
    if (cards.has(name)) return cards.get(name);
    const entry = { detail: null };
    entry.badge = h("span");
    entry.body = h("div", { class: "card-body" });
    const title = h("h2", { id: `provider-${cards.size}` },
      h("a", { href: `#/providers/${enc(name)}` }, name));
    entry.element = h("article", { class: "card", "aria-labelledby": title.id },
      h("div", { class: "card-head" }, title, entry.badge,
        actionButtons(name, () => entry.detail, refresh)),
      entry.body);
    list.append(entry.element);
    cards.set(name, entry);
    return entry;
  }

  async function refresh() {
    const providers = await get("/incremental/providers");
    const details = await Promise.all(
      providers.map((p) => get(`/incremental/providers/${enc(p.name)}`)));
    let health = null;
    try {
      health = await get("/incremental/health");
    } catch (error) {
      health = { healthy: false, error: error.message, providers: {} };
    }
    const state = healthSummary(health, details);
    replace(summary,
      h("p", { class: state.ok ? "ok" : "bad" }, state.text),
      h("ul", { class: "stats" }, state.counts.map(([label, value]) =>
        h("li", {}, h("span", { class: "value" }, number(value)), " ",
          h("span", { class: "label" }, label)))));
    if (!details.length) replace(list, h("p", { class: "muted" }, "No provider is registered."));
    for (const detail of details) {
      const entry = card(detail.name);
      entry.detail = detail;
      replace(entry.badge, badge(detail));
      replace(entry.body, stepFacts(detail), cycleProgress(detail), lastError(detail),
        heldBack(detail, true));
    }
    return state;
  }

  return { heading, refresh };
}
