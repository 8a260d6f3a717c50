// A provider's page: its state and actions, held-back removals, bursts, cycles, errors, checkpoints.

import { actionButtons } from "./actions.js";
import { get } from "./api.js";
import { burstChart } from "./chart.js";
import { duration, enc, h, number, replace, table, time, when } from "./dom.js";
import { heldRemovals } from "./held.js";
import { badge, cycleProgress, lastError, stepFacts } from "./status.js";

function section(title, ...children) {
  const id = `section-${title.toLowerCase().replace(/[^a-z]+/g, "-")}`;
  return h("section", { class: "panel", "aria-labelledby": id }, h("h2", { id }, title), children);
}

function cycleRows(cycles) {
  return cycles.map((c) => [
    `#${c.id}`, c.status, time(c.started_at, when(c.started_at)), duration(c.duration_seconds),
    number(c.pages), number(c.entities), number(c.written), number(c.unchanged),
    number(c.rejected), number(c.removed),
    c.blocked ? h("span", { title: c.blocked_reason || "" }, number(c.blocked)) : "0",
  ]);
}

function errorRows(errors) {
  return errors.map((e) => [
    time(e.created_at, when(e.created_at)), e.kind, e.rule ?? "–",
    e.cycle_id === null ? "–" : `#${e.cycle_id}`, e.page === null ? "–" : `page ${e.page}`,
    e.ref ?? e.entity ?? "–", h("span", { class: "message" }, e.message.split("\n", 1)[0]),
  ]);
}

function checkpointRows(checkpoints) {
  return checkpoints.map((c) => [
    `#${c.cycle_id}`, number(c.sequence), number(c.entities),
    h("code", {}, JSON.stringify(c.cursor)), time(c.created_at, when(c.created_at)),
  ]);
}

export function providerPage(main, name) {
  const base = `/incremental/providers/${enc(name)}`;
  let detail = null;
  const heading = h("h1", { tabindex: "-1" }, name);
  const state = h("span");
  const status = h("div");
  const held = heldRemovals(name, () => refresh());
  const chart = h("div");
  const cycles = h("div");
  const checkpoints = h("div");

  // Errors: a rule filter that keeps its value across refreshes, and paging with "Load more".
  const errors = { items: [], next: null, rule: "", rules: "" };
  const ruleSelect = h("select", { id: "error-rule", onchange: () => loadErrors(true) },
    h("option", { value: "" }, "every rule"));
  const errorTable = h("div");
  const more = h("button", { type: "button", hidden: true, onclick: () => loadErrors(false) },
    "Load more errors");

  async function loadErrors(fresh) {
    errors.rule = ruleSelect.value;
    const page = await get(`${base}/errors`, {
      limit: 25, rule: errors.rule, before: fresh ? null : errors.next,
    });
    errors.items = fresh ? page.items : errors.items.concat(page.items);
    errors.next = page.next_before;
    more.hidden = errors.next === null;
    replace(errorTable, table("Errors",
      ["When", "Kind", "Rule", "Cycle", "Page", "Entity", "Message"], errorRows(errors.items),
      errors.rule ? `No error of rule ${errors.rule}.` : "No error recorded."));
  }

  async function loadRules() {
    const { rules } = await get(`${base}/error-rules`);
    const key = JSON.stringify(rules);
    if (key === errors.rules) return;
    errors.rules = key;
    const chosen = ruleSelect.value;
    replace(ruleSelect, h("option", { value: "" }, "every rule"),
      Object.entries(rules).map(([rule, count]) =>
        h("option", { value: rule, selected: rule === chosen }, `${rule} (${number(count)})`)));
  }

  replace(main,
    h("p", { class: "crumbs" }, h("a", { href: "#/" }, "Providers"), " / ", name),
    h("div", { class: "page-head" }, heading, state,
      actionButtons(name, () => detail, () => refresh())),
    section("Now", status),
    held.element,
    section("Recent bursts", chart),
    section("Cycles", cycles),
    section("Errors",
      h("div", { class: "filters" }, h("label", { for: "error-rule" }, "Rule"), ruleSelect),
      errorTable, more),
    section("Page checkpoints", checkpoints));

  async function refresh() {
    const [d, c, b, k] = await Promise.all([
      get(base), get(`${base}/cycles`, { limit: 20 }), get(`${base}/bursts`, { limit: 60 }),
      get(`${base}/checkpoints`, { limit: 20 }),
    ]);
    detail = d;
    replace(state, badge(d));
    replace(status, stepFacts(d), cycleProgress(d), lastError(d));
    await held.update(d);
    replace(chart, burstChart(b.items));
    replace(cycles, table("Cycles",
      ["Cycle", "Status", "Started", "Duration", "Pages", "Entities", "Written", "Unchanged",
        "Rejected", "Removed", "Blocked"], cycleRows(c.items)));
    replace(checkpoints, table("Page checkpoints",
      ["Cycle", "Page", "Entities", "Cursor after the page", "Committed"],
      checkpointRows(k.items)));
    await loadRules();
    if (errors.next === null || errors.items.length <= 25) await loadErrors(true);
  }

  return { heading, refresh };
}
