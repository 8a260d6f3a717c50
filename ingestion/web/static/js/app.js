// The operator page: a router over the hash, a view per route, refreshed every few seconds.

import { clearNotices, fail } from "./actions.js";
import { get, loadSession, post } from "./api.js";
import { catalogPage, entityPage } from "./catalog.js";
import { h, replace } from "./dom.js";
import { overview } from "./overview.js";
import { providerPage } from "./provider.js";

const REFRESH_MS = 3000;
const main = document.getElementById("main");
const health = document.getElementById("health");
const updated = document.getElementById("updated");
const readError = document.getElementById("read-error");
let view = null;

// Reads that fail show here, apart from the outcome of an action, until a read succeeds again.
function readFailed(error) {
  if (error.status === 401) {
    replace(readError, `Not logged in any more: ${error.message} `,
      h("a", { href: "/login" }, "Log in again"));
  } else {
    replace(readError, `Could not read the API: ${error.message}`);
  }
  readError.hidden = false;
}

function route() {
  const hash = window.location.hash || "#/";
  const [path, query] = hash.slice(1).split("?");
  const params = new URLSearchParams(query || "");
  let match = path.match(/^\/providers\/(.+)$/);
  if (match) return { nav: "overview", title: decodeURIComponent(match[1]), view: providerPage(main, decodeURIComponent(match[1])) };
  match = path.match(/^\/entities\/(.+)$/);
  if (match) return { nav: "catalog", title: decodeURIComponent(match[1]), view: entityPage(main, decodeURIComponent(match[1])) };
  if (path === "/catalog") return { nav: "catalog", title: "Catalog", view: catalogPage(main, params) };
  return { nav: "overview", title: "Providers", view: overview(main) };
}

async function refreshHealth() {
  try {
    const body = await get("/incremental/health");
    health.textContent = body.healthy ? "Healthy" : "Needs attention";
    health.className = `health ${body.healthy ? "ok" : "bad"}`;
  } catch (error) {
    if (error.status === 401) throw error;
    health.textContent = "Needs attention";
    health.className = "health bad";
  }
}

async function tick(target, first) {
  if (target.busy || target !== view) return;
  target.busy = true;
  try {
    await refreshHealth();
    if (target.refresh) await target.refresh();
    else if (first) await target.load();
    updated.textContent = `Updated ${new Date().toLocaleTimeString("en-GB")}`;
    readError.hidden = true;
  } catch (error) {
    readFailed(error);
  } finally {
    target.busy = false;
  }
}

async function show() {
  clearNotices();
  const routed = route();
  view = routed.view;
  document.title = `${routed.title} · Incremental ingestion`;
  for (const link of document.querySelectorAll("nav a[data-nav]")) {
    if (link.dataset.nav === routed.nav) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  await tick(view, true);
  view.heading.focus();
}

async function boot() {
  let session;
  try {
    session = await loadSession();
  } catch (error) {
    if (error.status === 401) {
      window.location.replace("/login");
      return;
    }
    replace(main);
    fail(`Could not reach the API: ${error.message}`);
    return;
  }
  const logout = document.getElementById("logout");
  logout.hidden = !session.login_required;
  logout.addEventListener("click", async () => {
    try {
      await post("/logout");
    } finally {
      window.location.replace("/login");
    }
  });
  window.addEventListener("hashchange", show);
  setInterval(() => {
    if (!document.hidden && view && view.refresh) tick(view, false);
  }, REFRESH_MS);
  await show();
}

boot();
