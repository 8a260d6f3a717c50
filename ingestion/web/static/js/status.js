// How a provider stands, in words and small blocks shared by the overview and the provider page.

import { duration, enc, facts, h, number, relative, time } from "./dom.js";

// A short label and a tone for the provider's state.
export function stateOf(detail) {
  if (detail.action === null) return { label: "not registered yet", tone: "idle" };
  if (detail.running) return { label: `${detail.action} · running`, tone: "busy" };
  if (detail.action === "backoff") return { label: `backoff · attempt ${detail.attempts}`, tone: "bad" };
  if (detail.action === "parked") return { label: "parked · start it to go on", tone: "bad" };
  if (detail.action === "rest") return { label: "resting", tone: "idle" };
  return { label: `${detail.action} · waiting`, tone: "busy" };
}

export function badge(detail) {
  const state = stateOf(detail);
  return h("span", { class: `badge ${state.tone}` }, state.label);
}

export function stepFacts(detail) {
  return facts([
    ["Step", detail.action ?? "–"],
    ["Due", detail.due_at ? time(detail.due_at) : "–"],
    ["Worker", detail.running ? detail.worker ?? "–" : "none"],
    ["Entities", number(detail.entities)],
    ["Failed attempts", number(detail.attempts)],
    detail.waiting_removals ? ["Missing, kept for now", number(detail.waiting_removals)] : null,
  ]);
}

function stats(cycle) {
  return h("ul", { class: "stats", "aria-label": `Cycle ${cycle.id} counts` },
    [["pages", cycle.pages], ["entities", cycle.entities], ["written", cycle.written],
      ["unchanged", cycle.unchanged], ["rejected", cycle.rejected]].map(([label, value]) =>
      h("li", { class: label === "rejected" && value ? "warn" : "" },
        h("span", { class: "value" }, number(value)), " ", h("span", { class: "label" }, label))));
}

// The open cycle: its counts, a bar measured against the last completed cycle, time left.
export function cycleProgress(detail) {
  const cycle = detail.current_cycle;
  const last = detail.last_completed_cycle;
  if (!cycle) {
    if (!last) return h("p", { class: "muted" }, "No cycle has run yet.");
    return h("p", { class: "muted" },
      `No open cycle. The last one (#${last.id}) read ${number(last.entities)} entities in `,
      `${duration(last.duration_seconds)} and ended `, time(last.ended_at), ".");
  }
  let bar = null;
  let eta = "No estimate of the time left yet: no cycle of this provider has completed.";
  if (last && last.pages > 0 && last.duration_seconds !== null) {
    const fraction = Math.min(cycle.pages / last.pages, 1);
    bar = h("progress", {
      max: last.pages,
      value: Math.min(cycle.pages, last.pages),
      "aria-label": `Cycle ${cycle.id}: ${cycle.pages} of about ${last.pages} pages`,
    });
    eta = fraction >= 1
      ? `Already as long as the last cycle (${number(last.pages)} pages): it should end soon.`
      : `About ${duration(last.duration_seconds * (1 - fraction))} left ` +
        `(the last cycle read ${number(last.pages)} pages in ${duration(last.duration_seconds)}).`;
  }
  return h("div", { class: "progress" },
    h("p", {}, h("strong", {}, `Cycle #${cycle.id}`), ", started ", time(cycle.started_at),
      `, ${number(cycle.bursts)} burst${cycle.bursts === 1 ? "" : "s"}`),
    bar, stats(cycle),
    cycle.phase === "check"
      ? h("p", {}, `Checking removal candidates: ${number(cycle.checked)} asked, ${number(cycle.kept)} still in the source.`)
      : h("p", { class: "eta" }, eta));
}

export function lastError(detail) {
  const error = detail.last_error;
  if (!error) return null;
  return h("div", { class: "error-box" },
    h("strong", {}, "Last error "), error.at ? time(error.at) : null, ": ",
    h("span", { class: "message" }, error.message));
}

export function heldBack(detail, withLink) {
  const blocked = detail.blocked_sweep;
  if (!blocked) return null;
  return h("div", { class: "held" },
    h("strong", {}, `${number(blocked.count)} removals held back`),
    blocked.since_cycle ? ` since cycle #${blocked.since_cycle}` : "", `: ${blocked.reason}`,
    withLink ? [" ", h("a", { href: `#/providers/${enc(detail.name)}` }, `Review ${detail.name}`)] : null);
}

// One line for the health of everything: the health route plus what the providers say.
export function healthSummary(health, details) {
  const running = details.filter((d) => d.running).length;
  const failing = details.filter((d) => d.attempts > 0 || d.action === "parked").length;
  const held = details.filter((d) => d.blocked_sweep).length;
  const open = details.filter((d) => d.current_cycle).length;
  const problems = [];
  if (health && !health.healthy) {
    if (health.error) problems.push(health.error);
    for (const [name, count] of Object.entries(health.providers || {})) {
      problems.push(`${name} has ${count} open cycles`);
    }
  }
  if (failing) problems.push(`${failing} failing`);
  if (held) problems.push(`${held} with removals held back`);
  return {
    ok: problems.length === 0,
    text: problems.length ? `Needs attention: ${problems.join("; ")}` : "Healthy",
    counts: [["providers", details.length], ["open cycles", open], ["running", running],
      ["failing", failing], ["held back", held]],
  };
}
