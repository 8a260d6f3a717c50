// Steering a provider from the page: each action asks first, then shows what the API answered.

import { del, post } from "./api.js";
import { enc, h, number, relative } from "./dom.js";

const statusBox = () => document.getElementById("status");
const alertBox = () => document.getElementById("alert");

export function notify(message) {
  alertBox().hidden = true;
  const box = statusBox();
  box.textContent = message;
  box.hidden = false;
}

export function fail(message) {
  statusBox().hidden = true;
  const box = alertBox();
  box.textContent = message;
  box.hidden = false;
}

export function clearNotices() {
  statusBox().hidden = true;
  alertBox().hidden = true;
}

// Ask with the page's <dialog>; resolves true when the operator confirms.
export function confirm(title, text, confirmLabel) {
  const dialog = document.getElementById("confirm");
  document.getElementById("confirm-title").textContent = title;
  document.getElementById("confirm-text").textContent = text;
  document.getElementById("confirm-ok").textContent = confirmLabel;
  dialog.returnValue = "";
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
    dialog.showModal();
  });
}

function cycleText(detail) {
  const cycle = detail && detail.current_cycle;
  return cycle ? `the open cycle #${cycle.id} (${number(cycle.pages)} pages so far)` : null;
}

export const ACTIONS = {
  trigger: {
    label: "Trigger",
    run: (name) => post(`/incremental/providers/${enc(name)}/trigger`),
    explain: (name, detail) => {
      const step = detail && detail.action ? `its pending step (${detail.action}, due ${relative(detail.due_at)})` : "its pending step";
      return `Run ${step} of ${name} now. A burst that is running now is left alone.`;
    },
  },
  start: {
    label: "Start",
    run: (name) => post(`/incremental/providers/${enc(name)}/start`),
    explain: (name, detail) => {
      const open = cycleText(detail);
      return open
        ? `Cancel ${open} of ${name} without a sweep, and begin a new cycle now.`
        : `End the rest of ${name} and begin a new cycle now.`;
    },
  },
  cancel: {
    label: "Cancel cycle",
    run: (name) => post(`/incremental/providers/${enc(name)}/cancel`),
    explain: (name, detail) => {
      const open = cycleText(detail) || "the open cycle, if any,";
      return `Cancel ${open} of ${name} without sweeping anything. ${name} then rests until its rest ends or someone starts it.`;
    },
  },
  reset: {
    label: "Reset",
    run: (name) => del(`/incremental/providers/${enc(name)}`),
    explain: (name, detail) => {
      const kept = detail ? `its ${number(detail.entities)} entities` : "its entities";
      return `Forget every cycle, checkpoint, burst and error record of ${name}, and begin afresh now. ${kept} stay in the catalog until a completed cycle sweeps them.`;
    },
  },
};

// Ask, run, report. ``detail`` is the provider as last read (for the explanation).
export async function act(kind, name, detail, after) {
  const action = ACTIONS[kind];
  const ok = await confirm(`${action.label} ${name}?`, action.explain(name, detail), `${action.label} ${name}`);
  if (!ok) return;
  try {
    const step = await action.run(name);
    notify(`${step.message}. Next: ${step.action}, due ${relative(step.due_at)}.`);
  } catch (error) {
    fail(`${action.label} ${name} failed: ${error.message}`);
  }
  if (after) {
    try {
      await after();
    } catch {
      // a read that fails is shown by the next refresh
    }
  }
}

// The four buttons of a provider; ``current`` returns its detail as last read.
export function actionButtons(name, current, after) {
  return h("div", { class: "actions", role: "group", "aria-label": `Actions for ${name}` },
    Object.entries(ACTIONS).map(([kind, action]) =>
      h("button", {
        type: "button",
        class: kind === "reset" || kind === "cancel" ? "danger-outline" : "",
        "aria-label": `${action.label} ${name}`,
        "data-action": kind,
        onclick: () => act(kind, name, current(), after),
      }, action.label)));
}
