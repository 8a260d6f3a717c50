// The catalog browser: search by ref or name fragment, kind and provider, a page at a time;
// and one entity with its JSON, provider, and when it was written and last seen.

import { get } from "./api.js";
import { enc, facts, h, replace, table, time, when } from "./dom.js";

const PAGE = 25;

function field(id, label, control) {
  return h("div", { class: "field" }, h("label", { for: id }, label), control);
}

export function catalogPage(main, params) {
  const heading = h("h1", { tabindex: "-1" }, "Catalog");
  const q = h("input", { id: "search-q", type: "search", value: params.get("q") || "",
    placeholder: "e.g. service-00042", autocomplete: "off" });
  const kind = h("input", { id: "search-kind", type: "text", value: params.get("kind") || "",
    placeholder: "e.g. component", autocomplete: "off" });
  const provider = h("select", { id: "search-provider" }, h("option", { value: "" }, "any provider"));
  const results = h("div", { "aria-live": "polite" });
  const pager = h("nav", { class: "pager", "aria-label": "Result pages" });
  const trail = params.get("trail") ? params.get("trail").split(",").filter(Boolean) : [];
  const after = params.get("after") || "";

  function go(next) {
    const query = new URLSearchParams();
    for (const [key, value] of Object.entries(next)) if (value) query.set(key, value);
    window.location.hash = `#/catalog?${query}`;
  }

  const form = h("form", { class: "search", role: "search",
    onsubmit: (event) => {
      event.preventDefault();
      go({ q: q.value.trim(), kind: kind.value.trim(), provider: provider.value });
    } },
  field("search-q", "Ref or name contains", q), field("search-kind", "Kind", kind),
  field("search-provider", "Provider", provider), h("button", { type: "submit" }, "Search"));

  replace(main, heading, form, results, pager);

  async function load() {
    const providers = await get("/incremental/providers");
    replace(provider, h("option", { value: "" }, "any provider"), providers.map((p) =>
      h("option", { value: p.name, selected: p.name === params.get("provider") }, p.name)));
    const page = await get("/entities", {
      q: params.get("q"), kind: params.get("kind"), provider: params.get("provider"),
      after, limit: PAGE + 1,
    });
    // One more than a page is asked for: a next page is offered only when there is one.
    const items = page.items.slice(0, PAGE);
    const nextAfter = page.items.length > PAGE ? items[items.length - 1].ref : null;
    const rows = items.map((e) => [
      h("a", { href: `#/entities/${enc(e.ref)}` }, e.ref), e.provider,
      time(e.updated_at, when(e.updated_at)),
    ]);
    const from = trail.length * PAGE + 1;
    replace(results,
      h("p", { class: "muted" }, items.length
        ? `Entities ${from} to ${from + items.length - 1}${nextAfter ? "" : " (the last page)"}`
        : "No entity matches."),
      table("Entities", ["Ref", "Provider", "Written"], rows, ""));
    const current = { q: params.get("q"), kind: params.get("kind"), provider: params.get("provider") };
    replace(pager,
      trail.length ? h("button", { type: "button", onclick: () => go({
        ...current, after: trail[trail.length - 1] === "-" ? "" : trail[trail.length - 1],
        trail: trail.slice(0, -1).join(","),
      }) }, "Previous page") : null,
      nextAfter ? h("button", { type: "button", onclick: () => go({
        ...current, after: nextAfter, trail: [...trail, after || "-"].join(","),
      }) }, "Next page") : null);
  }

  return { heading, load };
}

export function entityPage(main, ref) {
  const heading = h("h1", { tabindex: "-1" }, ref);
  const body = h("div");
  replace(main, h("p", { class: "crumbs" }, h("a", { href: "#/catalog" }, "Catalog"), " / ", ref),
    heading, body);

  async function load() {
    const entity = await get(`/entities/${enc(ref)}`);
    let seen = "–";
    if (entity.mark_cycle !== null && entity.mark_cycle !== undefined) {
      try {
        const cycle = await get(
          `/incremental/providers/${enc(entity.provider)}/cycles/${entity.mark_cycle}`);
        seen = [`cycle #${cycle.id} (${cycle.status}`,
          cycle.ended_at ? [", ended ", time(cycle.ended_at, when(cycle.ended_at))] : ", still open",
          ")"];
      } catch {
        seen = `cycle #${entity.mark_cycle} (its record was purged)`;
      }
    }
    replace(body,
      facts([
        ["Provider", h("a", { href: `#/providers/${enc(entity.provider)}` }, entity.provider)],
        ["Written", time(entity.updated_at, when(entity.updated_at))],
        ["Created", time(entity.created_at, when(entity.created_at))],
        ["Last seen", seen],
        ["Location key", entity.location_key ?? "–"],
        ["Content hash", h("code", {}, entity.hash.slice(0, 16) + "…")],
      ]),
      h("h2", {}, "Entity"),
      h("pre", { class: "json", tabindex: "0", "aria-label": `JSON of ${ref}` },
        JSON.stringify(entity.entity, null, 2)));
  }

  return { heading, load };
}
