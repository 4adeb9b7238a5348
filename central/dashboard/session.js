// The dashboard's session (central.auth): loaded before app.js. It
// - sends the user to the login page when any API call answers 401 (session expired, logged out);
// - shows the user, their role and a logout button: in the page's [data-session-slot] (the
//   dashboard's header, so it never covers the figures) or else in a corner;
// - exposes window.shilianSession = {user, role, scope, scope_name, expires_at} from
//   GET /api/v1/me once known (window.shilianSessionReady resolves to it; the event
//   "shilian-session" fires on document), so app.js can show only what the role may do.
(function () {
  "use strict";
  var ROLE = {
    "zh-CN": { viewer: "查看员", operator: "值班员", admin: "管理员", logout: "退出登录", all: "全部" },
    en: { viewer: "viewer", operator: "operator", admin: "administrator", logout: "Log out", all: "all" },
  };
  var lang = document.documentElement.lang === "en" ? "en" : "zh-CN";
  var t = ROLE[lang];
  var plainFetch = window.fetch.bind(window);
  var leaving = false;

  function toLogin() {
    if (leaving) return;
    leaving = true;
    var next = location.pathname + location.search + location.hash;
    location.assign("/dashboard/login?next=" + encodeURIComponent(next) + (lang === "en" ? "&lang=en" : ""));
  }

  window.fetch = function (input, init) {
    return plainFetch(input, init).then(function (r) {
      if (r.status === 401) toLogin();
      return r;
    });
  };

  function badge(s) {
    var box = document.createElement("div");
    box.setAttribute("data-test", "session");
    var slot = document.querySelector("[data-session-slot]");
    box.style.cssText = (slot ? "" : "position:fixed;right:12px;bottom:10px;z-index:50;font-size:12px;") +
      "display:flex;gap:10px;align-items:center;padding:4px 10px;border-radius:4px;white-space:nowrap;" +
      "background:rgba(22,38,61,.92);border:1px solid #26405f;color:#8fa3bb";
    var who = document.createElement("span");
    who.setAttribute("data-test", "session-user");
    who.textContent = s.user + " · " + (t[s.role] || s.role) + " · " + (s.scope_name || s.scope || t.all);
    who.title = who.textContent;
    var out = document.createElement("a");
    out.setAttribute("data-test", "logout");
    out.textContent = t.logout;
    out.href = "#";
    out.addEventListener("click", function (ev) {
      ev.preventDefault();
      plainFetch("/api/v1/logout", {
        method: "POST", credentials: "same-origin",
        headers: { "Content-Type": "application/json" }, body: "{}",
      }).finally(function () {
        leaving = true;
        location.assign("/dashboard/login" + (lang === "en" ? "?lang=en" : ""));
      });
    });
    box.appendChild(who);
    box.appendChild(out);
    (slot || document.body).appendChild(box);
  }

  window.shilianSession = null;
  window.shilianSessionReady = plainFetch("/api/v1/me", {
    headers: { Accept: "application/json" }, credentials: "same-origin",
  }).then(function (r) {
    if (r.status === 401) { toLogin(); return null; }
    return r.ok ? r.json() : null;
  }).then(function (s) {
    if (!s) return null;
    window.shilianSession = s;
    var show = function () {
      badge(s);
      document.dispatchEvent(new CustomEvent("shilian-session", { detail: s }));
    };
    if (document.body) show(); else document.addEventListener("DOMContentLoaded", show);
    return s;
  }, function () { return null; });
})();
