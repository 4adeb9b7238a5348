// The login page: POST /api/v1/login, then back to where the user was going (?next=, a path on
// this server only). The session cookie is HttpOnly: this script never sees or stores the token.
(function () {
  "use strict";
  var TEXT = {
    "zh-CN": { title: "综治视联网 · 登录", user: "用户名", password: "密码", submit: "登录",
      busy: "正在登录…", other: "English", failed: "登录失败" },
    en: { title: "Video network · log in", user: "User name", password: "Password",
      submit: "Log in", busy: "Logging in…", other: "中文", failed: "Login failed" },
  };
  var lang = document.documentElement.lang === "en" ? "en" : "zh-CN";
  var t = TEXT[lang];
  var params = new URLSearchParams(location.search);

  function safeNext(raw) {
    // Only a path on this server: never "//host" or "https://…" (no open redirect).
    if (!raw || raw.charAt(0) !== "/" || raw.charAt(1) === "/" || raw.charAt(1) === "\\") {
      return "/dashboard/" + (lang === "en" ? "?lang=en" : "");
    }
    return raw;
  }

  function message(body, status) {
    // Server messages are "中文 / English": show the half in the page's language.
    var m = body && body.error && body.error.message ? String(body.error.message) : t.failed + " (" + status + ")";
    var parts = m.split(" / ");
    return parts.length >= 2 ? (lang === "en" ? parts.slice(1).join(" / ") : parts[0]) : m;
  }

  document.querySelector("[data-test=login-title]").textContent = t.title;
  document.querySelectorAll("[data-i18n]").forEach(function (el) {
    el.textContent = t[el.getAttribute("data-i18n")];
  });
  var other = document.querySelector("[data-test=lang]");
  other.textContent = t.other;
  var otherParams = new URLSearchParams(location.search);
  if (lang === "en") otherParams.delete("lang"); else otherParams.set("lang", "en");
  other.href = "/dashboard/login" + (otherParams.toString() ? "?" + otherParams.toString() : "");

  var form = document.querySelector("[data-test=login-form]");
  var button = document.querySelector("[data-test=login-submit]");
  var error = document.querySelector("[data-test=login-error]");
  document.getElementById("user").focus();

  form.addEventListener("submit", function (ev) {
    ev.preventDefault();
    error.textContent = "";
    button.disabled = true;
    button.textContent = t.busy;
    fetch("/api/v1/login", {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "application/json" },
      body: JSON.stringify({ user: form.user.value.trim(), password: form.password.value }),
      credentials: "same-origin",
    }).then(function (r) {
      return r.json().catch(function () { return null; }).then(function (body) {
        if (r.ok) {
          location.assign(safeNext(params.get("next")));
          return;
        }
        error.textContent = message(body, r.status);
        form.password.value = "";
        form.password.focus();
      });
    }).catch(function (e) {
      error.textContent = t.failed + ": " + e;
    }).finally(function () {
      button.disabled = false;
      button.textContent = t.submit;
    });
  });
})();
