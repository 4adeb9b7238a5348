// What every dashboard page needs, loaded before its own scripts (index.html, meeting.html,
// broadcast.html): the page's boot data, its strings, element lookup, HTML escaping, calls to
// central's API and the head of the pages opened from the dashboard. The pages are classic
// scripts sharing one global scope, so these are top-level names; none is defined again.
"use strict";

// What central put in the page (central.dashboard, central.meeting_routes,
// central.broadcast_routes): at least its language and every catalogue string in it.
const BOOT = JSON.parse(document.getElementById("boot").textContent);
const LANG = BOOT.lang;

// A catalogue string (strings.toml) in the page's language with its {placeholders} filled; a
// placeholder not given stays as it is, a key not in the catalogue shows as itself.
function t(key, vars = {}) {
  const s = BOOT.strings[key];
  if (s === undefined) { console.warn("missing string", key); return key; }
  return s.replace(/\{(\w+)\}/g, (_, k) => (k in vars ? String(vars[k]) : `{${k}}`));
}
const $ = (sel, root = document) => root.querySelector(sel);
function esc(s) {
  return String(s ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
}

// A call to central's API with the session cookie; the answer's JSON, or an Error whose message
// is central's ("中文 / English") and whose ``code`` is central's error code ("busy",
// "node_offline"…; the HTTP status when the answer carries no error).
// Every other state change is JSON: central refuses anything else (CSRF defence, docs/api.md).
// A DELETE names what it ends in its path, carries no body, and outlives the page (keepalive),
// so a hang-up sent as the page closes still reaches central.
async function api(path, method = "GET", payload = undefined) {
  const init = { method, credentials: "same-origin", keepalive: method === "DELETE", headers: { Accept: "application/json" } };
  if (payload !== undefined || (method !== "GET" && method !== "DELETE")) {
    init.body = JSON.stringify(payload ?? {});
    init.headers["Content-Type"] = "application/json";
  }
  const r = await fetch(path, init);
  const body = await r.json();
  if (!r.ok) {
    const e = new Error(body.error ? body.error.message : r.statusText);
    e.code = body.error ? body.error.code : String(r.status);
    throw e;
  }
  return body;
}

// The head of a page opened from the dashboard (meeting, broadcast): its title, the product's
// name, and the way back to the dashboard's view ``hash`` in the same language.
function subpageHead(title, hash) {
  document.title = title;
  $("[data-test=brand]").textContent = t("app_title");
  const back = $("[data-test=back]");
  back.textContent = t("meeting_back");
  back.href = `/dashboard/${LANG === "en" ? "?lang=en" : ""}${hash}`;
}
