// The admin pages ("#/admin/rules", "#/admin/users", "#/admin/audit"): alert rules and the
// webhook receivers, user accounts, the audit log. Shown to admins only (the header's link
// appears for them; central refuses everyone else's calls anyway, docs/api.md).
// Loaded before app.js; uses its helpers (t, esc, fmtTime, roleRank, markReady...) when called.
"use strict";

window.shilianAdmin = (function () {
  // Audit rows per page: a screen's worth; older ones by the time filter or the pager.
  const AUDIT_PAGE = 50;
  const TABS = ["rules", "users", "audit"];
  const KINDS = ["coverage_below", "node_offline", "alarm_unacked", "device_down", "outbox_backlog"];
  const ROLE_NAMES = ["viewer", "operator", "admin"];
  // What the audit log records (docs/api.md); the filter offers these, the table names them.
  const ACTIONS = ["login", "login_failed", "logout", "alarm_ack", "alarm_close", "command",
    "user_add", "user_passwd", "user_disable", "user_enable", "alert_rule_add",
    "alert_rule_change", "alert_rule_delete", "alert_rules_replace", "meeting_call",
    "meeting_prepare", "meeting_hangup", "token_create", "token_revoke", "revoke", "firmware_upload", "webhook_change",
    "webhook_test"];
  // Day boundaries of the audit filter: China Standard Time, as the operators' clocks.
  const dayStart = (iso) => Date.parse(`${iso}T00:00:00+08:00`) / 1000;

  // api() (kit.js) with central's message in the page's language (central answers
  // "中文 / English").
  async function call(path, method = "GET", payload = undefined) {
    try {
      return await api(path, method, payload);
    } catch (e) {
      e.message = said(e.message);
      throw e;
    }
  }
  function said(message) {
    const i = message.indexOf(" / ");
    if (i < 0) return message;
    return LANG === "en" ? message.slice(i + 3) : message.slice(0, i);
  }
  const nameOf = (prefix, key) => (BOOT.strings[`${prefix}_${key}`] ? t(`${prefix}_${key}`) : key);
  const scopeText = (code, name) => (code ? `${name ? `${name} ` : ""}${code}` : t("admin_scope_all"));

  function frame(tab) {
    const root = $("#view");
    root.innerHTML = `<section class="card admin" data-test="admin" data-tab="${tab}">
      <nav class="admin-tabs" data-test="admin-tabs">${TABS.map((k) => `<a href="#/admin/${k}" data-tab="${k}" class="${k === tab ? "on" : ""}">${esc(t(`admin_tab_${k}`))}</a>`).join("")}</nav>
      <p class="muted" data-test="admin-changed" aria-live="polite" hidden></p>
      <div data-test="admin-body"></div></section>`;
    return $("[data-test=admin-body]", root);
  }

  // -- alert rules and webhooks ----------------------------------------------------------------

  function rulesView(box) {
    let rules = [], names = {}, webhooks = [], editing = null, message = "", source = "config";
    // Webhook edited in the form, and each receiver's last test result (kept across reloads).
    let hookEditing = null;
    const tested = {};
    box.innerHTML = `<h2>${esc(t("admin_rules_title"))} <span class="muted" data-test="rules-source"></span></h2>
      <table data-test="rules-table"><thead><tr><th>${esc(t("rule_id"))}</th><th>${esc(t("rule_kind"))}</th>
        <th>${esc(t("rule_code"))}</th><th>${esc(t("rule_threshold"))}</th><th>${esc(t("rule_minutes"))}</th>
        <th>${esc(t("rule_severity"))}</th><th>${esc(t("rule_enabled"))}</th><th></th></tr></thead><tbody></tbody></table>
      <p class="error-text" data-test="rules-message" hidden></p>
      <form class="admin-form" data-test="rule-form" novalidate>
        <h3 data-test="rule-form-title"></h3>
        <label>${esc(t("rule_id"))} <input name="id" data-test="rule-id" maxlength="64"></label>
        <label>${esc(t("rule_kind"))} <select name="kind" data-test="rule-kind">${KINDS.map((k) => `<option value="${k}">${esc(t(`rule_kind_${k}`))}</option>`).join("")}</select></label>
        <label>${esc(t("rule_code"))} <input name="code" data-test="rule-code" maxlength="12" placeholder="${esc(t("admin_scope_all"))}"></label>
        <label data-for="threshold_pct">${esc(t("rule_threshold_pct"))} <input name="threshold_pct" data-test="rule-threshold" inputmode="decimal"></label>
        <label data-for="backlog">${esc(t("rule_backlog"))} <input name="backlog" data-test="rule-backlog" inputmode="numeric"></label>
        <label>${esc(t("rule_minutes"))} <input name="minutes" data-test="rule-minutes" inputmode="decimal"></label>
        <label>${esc(t("rule_severity"))} <select name="severity" data-test="rule-severity">${["warning", "critical"].map((s) => `<option value="${s}">${esc(t(`severity_${s}`))}</option>`).join("")}</select></label>
        <label><input type="checkbox" name="enabled" data-test="rule-enabled" checked> ${esc(t("rule_enabled"))}</label>
        <button type="submit" data-test="rule-save">${esc(t("admin_save"))}</button>
        <button type="button" data-test="rule-cancel">${esc(t("admin_cancel"))}</button>
        <p class="error-text" data-test="rule-error" hidden></p>
      </form>
      <h2>${esc(t("admin_webhooks_title"))}</h2>
      <ul class="admin-list" data-test="webhooks"></ul>
      <p class="muted">${esc(t("admin_webhooks_note"))}</p>
      <form class="admin-form" data-test="webhook-form" novalidate hidden>
        <h3 data-test="webhook-form-title"></h3>
        <label>${esc(t("admin_webhook_url"))} <input name="url" data-test="webhook-url" autocomplete="off" spellcheck="false"></label>
        <label>${esc(t("admin_webhook_timeout"))} <input name="timeout_s" data-test="webhook-timeout" inputmode="decimal"></label>
        <label>${esc(t("admin_webhook_attempts"))} <input name="max_attempts" data-test="webhook-attempts" inputmode="numeric"></label>
        <button type="submit" data-test="webhook-save">${esc(t("admin_save"))}</button>
        <button type="button" data-test="webhook-cancel">${esc(t("admin_cancel"))}</button>
        <p class="error-text" data-test="webhook-error" hidden></p>
      </form>`;
    const form = $("[data-test=rule-form]", box);
    const err = $("[data-test=rule-error]", box);
    const note = $("[data-test=rules-message]", box);
    const hookForm = $("[data-test=webhook-form]", box);
    const hookErr = $("[data-test=webhook-error]", box);

    function showKindFields() {
      const kind = form.kind.value;
      form.querySelector("[data-for=threshold_pct]").hidden = kind !== "coverage_below";
      form.querySelector("[data-for=backlog]").hidden = kind !== "outbox_backlog";
    }
    function fill(rule) {
      editing = rule ? rule.id : null;
      $("[data-test=rule-form-title]", box).textContent = rule ? t("admin_rule_edit", { id: rule.id }) : t("admin_rule_new");
      form.id.value = rule ? rule.id : "";
      form.id.disabled = !!rule; // an id is the rule's name in alerts and webhooks: it stays
      form.kind.value = rule ? rule.kind : KINDS[0];
      form.code.value = rule ? rule.code : "";
      form.threshold_pct.value = rule && rule.threshold_pct != null ? rule.threshold_pct : "";
      form.backlog.value = rule && rule.backlog != null ? rule.backlog : "";
      form.minutes.value = rule ? rule.minutes : "";
      form.severity.value = rule ? rule.severity : "warning";
      form.enabled.checked = rule ? rule.enabled !== false : true;
      err.hidden = true;
      showKindFields();
    }
    // The form as the API's rule: numbers as numbers, empty optional fields left out (a text
    // that is not a number is sent as typed, and central says what is wrong with it).
    function payload() {
      const num = (v) => (v.trim() === "" ? undefined : Number.isFinite(Number(v)) ? Number(v) : v.trim());
      const r = { id: form.id.value.trim(), kind: form.kind.value, code: form.code.value.trim(),
        severity: form.severity.value, enabled: form.enabled.checked };
      const minutes = num(form.minutes.value);
      if (minutes !== undefined) r.minutes = minutes;
      if (r.kind === "coverage_below" && num(form.threshold_pct.value) !== undefined) r.threshold_pct = num(form.threshold_pct.value);
      if (r.kind === "outbox_backlog" && num(form.backlog.value) !== undefined) r.backlog = num(form.backlog.value);
      return r;
    }
    function render() {
      $("[data-test=rules-source]", box).textContent = t(`admin_rules_source_${source}`);
      note.hidden = !message;
      note.textContent = message;
      const body = $("[data-test=rules-table] tbody", box);
      body.innerHTML = rules.length ? rules.map((r) => `<tr data-rule="${esc(r.id)}" class="${r.enabled === false ? "disabled" : ""}">
          <td>${esc(r.id)}</td><td>${esc(nameOf("rule_kind", r.kind))}</td><td>${esc(scopeText(r.code, names[r.code]))}</td>
          <td>${r.kind === "coverage_below" ? `${esc(r.threshold_pct)}%` : r.kind === "outbox_backlog" ? esc(r.backlog) : "—"}</td>
          <td>${esc(r.minutes)}</td><td>${esc(t(`severity_${r.severity}`))}</td>
          <td data-test="rule-state">${r.enabled === false ? `<span class="pill never">${esc(t("rule_disabled"))}</span>` : `<span class="pill online">${esc(t("rule_on"))}</span>`}</td>
          <td class="actions"><button data-act="edit">${esc(t("admin_edit"))}</button>
            <button data-act="toggle">${esc(t(r.enabled === false ? "admin_enable" : "admin_disable"))}</button>
            <button data-act="delete">${esc(t("admin_delete"))}</button></td></tr>`).join("")
        : `<tr><td colspan="8" class="muted">${esc(t("admin_rules_none"))}</td></tr>`;
      body.querySelectorAll("tr[data-rule]").forEach((tr) => {
        const rule = rules.find((r) => r.id === tr.dataset.rule);
        tr.querySelector("[data-act=edit]").addEventListener("click", () => { fill(rule); form.scrollIntoView({ block: "nearest" }); });
        tr.querySelector("[data-act=toggle]").addEventListener("click", () => act(() => call(`/api/v1/alerts/rules/${encodeURIComponent(rule.id)}`, "PUT", { ...rule, enabled: rule.enabled === false })));
        const del = tr.querySelector("[data-act=delete]");
        // Two clicks: the second, on "confirm delete", deletes (no browser dialog on a wall PC).
        del.addEventListener("click", () => {
          if (!del.dataset.confirm) { del.dataset.confirm = "1"; del.textContent = t("admin_delete_confirm"); return; }
          act(() => call(`/api/v1/alerts/rules/${encodeURIComponent(rule.id)}`, "DELETE"));
        });
      });
      const hooks = $("[data-test=webhooks]", box);
      hooks.innerHTML = webhooks.length
        ? webhooks.map((w) => `<li data-test="webhook" data-webhook="${w.id}"><code>${esc(w.url)}</code>
            <span class="muted">${esc(t("admin_webhook_queued", { n: w.queued }))}${w.source === "api" ? ` · ${esc(t("admin_webhook_source_api"))}` : ""}</span>
            <button data-act="edit">${esc(t("admin_edit"))}</button> <button data-act="test">${esc(t("admin_webhook_test"))}</button>
            <span data-test="webhook-result" class="${tested[w.id] && !tested[w.id].ok ? "error-text" : "muted"}">${esc(tested[w.id] ? tested[w.id].text : "")}</span></li>`).join("")
        : `<li class="muted">${esc(t("admin_webhooks_none"))}</li>`;
      hooks.querySelectorAll("li[data-webhook]").forEach((li) => {
        const w = webhooks.find((x) => String(x.id) === li.dataset.webhook);
        li.querySelector("[data-act=edit]").addEventListener("click", () => fillHook(w));
        li.querySelector("[data-act=test]").addEventListener("click", () => sendTest(w.id));
      });
    }
    function fillHook(w) {
      hookEditing = w ? w.id : null;
      hookForm.hidden = !w;
      hookErr.hidden = true;
      if (!w) return;
      $("[data-test=webhook-form-title]", box).textContent = t("admin_webhook_edit", { n: w.id });
      hookForm.url.value = "";
      hookForm.url.placeholder = w.url; // masked: the secret never reaches the page
      hookForm.timeout_s.value = w.timeout_s;
      hookForm.max_attempts.value = w.max_attempts;
      hookForm.scrollIntoView({ block: "nearest" });
    }
    async function sendTest(id) {
      tested[id] = { ok: true, text: t("admin_webhook_testing") };
      render();
      try {
        const r = await call(`/api/v1/alerts/webhooks/${id}/test`, "POST", {});
        tested[id] = { ok: r.ok, text: r.ok ? t("admin_webhook_test_ok", { status: r.status }) : t("admin_webhook_test_failed", { error: r.error }) };
      } catch (e) {
        tested[id] = { ok: false, text: t("admin_webhook_test_failed", { error: e.message }) };
      }
      render();
    }
    async function load() {
      const [r, a] = await Promise.all([call("/api/v1/alerts/rules"), call("/api/v1/alerts")]);
      rules = r.rules; names = r.names || {}; source = r.source; webhooks = a.webhooks;
      render();
    }
    async function act(fn) {
      message = "";
      try { await fn(); } catch (e) { message = e.message; }
      await load();
    }
    $("[data-test=webhook-cancel]", box).addEventListener("click", () => fillHook(null));
    hookForm.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      // Numbers as numbers; a text that is not one is sent as typed and central names the field.
      const num = (v) => (Number.isFinite(Number(v)) && v.trim() !== "" ? Number(v) : v.trim());
      const change = { timeout_s: num(hookForm.timeout_s.value), max_attempts: num(hookForm.max_attempts.value) };
      if (hookForm.url.value.trim()) change.url = hookForm.url.value.trim();
      const id = hookEditing;
      try {
        await call(`/api/v1/alerts/webhooks/${id}`, "PATCH", change);
      } catch (e) {
        hookErr.textContent = e.message;
        hookErr.hidden = false;
        return;
      }
      fillHook(null);
      message = t("admin_webhook_saved", { n: id });
      delete tested[id];
      await load();
    });
    form.kind.addEventListener("change", showKindFields);
    $("[data-test=rule-cancel]", box).addEventListener("click", () => fill(null));
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const rule = payload();
      try {
        if (editing) await call(`/api/v1/alerts/rules/${encodeURIComponent(editing)}`, "PUT", { ...rule, id: editing });
        else await call("/api/v1/alerts/rules", "POST", rule);
      } catch (e) {
        err.textContent = e.message;
        err.hidden = false;
        return;
      }
      fill(null);
      await load();
    });
    fill(null);
    return load;
  }

  // -- users ----------------------------------------------------------------------------------

  function usersView(box) {
    let users = [], message = "";
    const me = window.shilianSession ? window.shilianSession.user : "";
    box.innerHTML = `<h2>${esc(t("admin_users_title"))}</h2>
      <table data-test="users-table"><thead><tr><th>${esc(t("user_name"))}</th><th>${esc(t("user_role"))}</th>
        <th>${esc(t("user_scope"))}</th><th>${esc(t("col_state"))}</th><th>${esc(t("user_changed"))}</th><th></th></tr></thead><tbody></tbody></table>
      <p class="error-text" data-test="users-message" hidden></p>
      <form class="admin-form" data-test="user-form" novalidate>
        <h3>${esc(t("admin_user_new"))}</h3>
        <label>${esc(t("user_name"))} <input name="name" data-test="user-name" maxlength="64" autocomplete="off"></label>
        <label>${esc(t("user_role"))} <select name="role" data-test="user-role">${ROLE_NAMES.map((r) => `<option value="${r}">${esc(t(`role_${r}`))}</option>`).join("")}</select></label>
        <label>${esc(t("user_scope"))} <input name="scope" data-test="user-scope" maxlength="12" placeholder="${esc(t("admin_scope_all"))}"></label>
        <label>${esc(t("user_password"))} <input name="password" type="password" data-test="user-password" autocomplete="new-password"></label>
        <button type="submit" data-test="user-save">${esc(t("admin_create"))}</button>
        <p class="error-text" data-test="user-error" hidden></p>
      </form>`;
    const form = $("[data-test=user-form]", box);
    const err = $("[data-test=user-error]", box);
    const note = $("[data-test=users-message]", box);
    function render() {
      note.hidden = !message;
      note.textContent = message;
      const body = $("[data-test=users-table] tbody", box);
      // A new password being typed for a user survives another admin's change redrawing the rows.
      const typed = {};
      body.querySelectorAll("tr[data-user]").forEach((tr) => { typed[tr.dataset.user] = tr.querySelector("[data-test=user-new-password]").value; });
      body.innerHTML = users.map((u) => `<tr data-user="${esc(u.name)}" class="${u.disabled ? "disabled" : ""}">
          <td>${esc(u.name)}</td><td>${esc(t(`role_${u.role}`))}</td><td>${esc(scopeText(u.scope, u.scope_name))}</td>
          <td data-test="user-state">${u.disabled ? `<span class="pill never">${esc(t("user_disabled"))}</span>` : `<span class="pill online">${esc(t("user_active"))}</span>`}</td>
          <td>${esc(fmtTime(u.changed))}</td>
          <td class="actions"><input type="password" data-test="user-new-password" placeholder="${esc(t("user_new_password"))}" autocomplete="new-password">
            <button data-act="password">${esc(t("admin_reset_password"))}</button>
            ${u.name === me ? "" : `<button data-act="toggle">${esc(t(u.disabled ? "admin_enable" : "admin_disable"))}</button>`}</td></tr>`).join("");
      body.querySelectorAll("tr[data-user]").forEach((tr) => {
        const name = tr.dataset.user;
        if (typed[name]) tr.querySelector("[data-test=user-new-password]").value = typed[name];
        const path = `/api/v1/users/${encodeURIComponent(name)}`;
        tr.querySelector("[data-act=password]").addEventListener("click", () => {
          const password = tr.querySelector("[data-test=user-new-password]").value;
          act(() => call(`${path}/password`, "POST", { password }), t("admin_password_reset", { name }));
        });
        const toggle = tr.querySelector("[data-act=toggle]");
        if (toggle) {
          const u = users.find((x) => x.name === name);
          toggle.addEventListener("click", () => act(() => call(`${path}/disabled`, "POST", { disabled: !u.disabled }), ""));
        }
      });
    }
    async function load() {
      users = (await call("/api/v1/users")).users;
      render();
    }
    async function act(fn, done) {
      try { await fn(); message = done; } catch (e) { message = e.message; }
      await load();
    }
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const body = { name: form.name.value.trim(), role: form.role.value, scope: form.scope.value.trim(), password: form.password.value };
      try {
        await call("/api/v1/users", "POST", body);
      } catch (e) {
        err.textContent = e.message;
        err.hidden = false;
        return;
      }
      err.hidden = true;
      form.reset();
      message = t("admin_user_created", { name: body.name });
      await load();
    });
    return load;
  }

  // -- the audit log --------------------------------------------------------------------------

  function auditView(box) {
    const f = { user: "", action: "", from: "", to: "", offset: 0 };
    box.innerHTML = `<h2>${esc(t("admin_audit_title"))} <span class="muted" data-test="audit-total"></span></h2>
      <form class="tools" data-test="audit-filter">
        <label>${esc(t("user_name"))} <input name="user" data-test="audit-user" maxlength="64"></label>
        <label>${esc(t("audit_action"))} <select name="action" data-test="audit-action"><option value="">${esc(t("filter_all"))}</option>${ACTIONS.map((a) => `<option value="${a}">${esc(nameOf("audit_action", a))}</option>`).join("")}</select></label>
        <label>${esc(t("alarm_from"))} <input type="date" name="from" data-test="audit-from"></label>
        <label>${esc(t("alarm_to"))} <input type="date" name="to" data-test="audit-to"></label>
        <button type="submit" data-test="audit-apply">${esc(t("admin_filter"))}</button>
      </form>
      <table data-test="audit-table"><thead><tr><th>${esc(t("col_time"))}</th><th>${esc(t("user_name"))}</th>
        <th>${esc(t("user_role"))}</th><th>${esc(t("audit_address"))}</th><th>${esc(t("audit_action"))}</th>
        <th>${esc(t("audit_target"))}</th><th>${esc(t("audit_outcome"))}</th><th>${esc(t("audit_detail"))}</th></tr></thead><tbody></tbody></table>
      <div class="tools pager"><button data-test="audit-prev">${esc(t("admin_prev"))}</button>
        <span data-test="audit-page"></span><button data-test="audit-next">${esc(t("admin_next"))}</button></div>`;
    const form = $("[data-test=audit-filter]", box);
    let total = 0;
    async function load() {
      const q = new URLSearchParams({ limit: String(AUDIT_PAGE), offset: String(f.offset) });
      if (f.user) q.set("user", f.user);
      if (f.action) q.set("action", f.action);
      if (f.from) q.set("since", String(dayStart(f.from)));
      if (f.to) q.set("until", String(dayStart(f.to) + 86400));
      const r = await call(`/api/v1/audit?${q}`);
      total = r.total;
      $("[data-test=audit-total]", box).textContent = t("admin_audit_total", { n: fmtInt(total) });
      $("[data-test=audit-table] tbody", box).innerHTML = r.entries.length ? r.entries.map((e) => `<tr data-audit="${e.id}" data-action="${esc(e.action)}">
          <td>${esc(fmtTime(e.ts))}</td><td>${esc(e.user ?? "—")}</td><td>${esc(e.role ? t(`role_${e.role}`) : "—")}</td>
          <td>${esc(e.address)}</td><td>${esc(nameOf("audit_action", e.action))}</td><td>${esc(e.target)}</td>
          <td data-test="audit-outcome" data-outcome="${esc(e.outcome)}">${esc(nameOf("audit_outcome", e.outcome))}</td><td class="detail"><code>${esc(Object.keys(e.detail).length ? JSON.stringify(e.detail) : "")}</code></td></tr>`).join("")
        : `<tr><td colspan="8" class="muted">${esc(t("admin_audit_none"))}</td></tr>`;
      const last = Math.min(total, f.offset + r.entries.length);
      $("[data-test=audit-page]", box).textContent = total ? t("admin_audit_page", { first: fmtInt(f.offset + 1), last: fmtInt(last), total: fmtInt(total) }) : "";
      $("[data-test=audit-prev]", box).disabled = f.offset === 0;
      $("[data-test=audit-next]", box).disabled = last >= total;
    }
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      Object.assign(f, { user: form.user.value.trim(), action: form.action.value, from: form.from.value, to: form.to.value, offset: 0 });
      load();
    });
    $("[data-test=audit-prev]", box).addEventListener("click", () => { f.offset = Math.max(0, f.offset - AUDIT_PAGE); load(); });
    $("[data-test=audit-next]", box).addEventListener("click", () => { f.offset += AUDIT_PAGE; load(); });
    return load;
  }

  // -- the view and the header link ------------------------------------------------------------

  // The forms keep what is typed: a view reads the API once, again after each change it makes,
  // and when another admin changed what it shows (an "admin" live message: changed()); not on
  // the other live messages (app.js re-runs refresh() on those). A reload redraws the lists,
  // never the forms.
  let current = null;
  const SHOWS = { rules: ["rules", "webhooks"], users: ["users"], audit: ["rules", "webhooks", "users"] };
  function changed(what) {
    if (current && current.load && SHOWS[current.tab].includes(what.what)) {
      current.load().then(() => {
        const by = $("[data-test=admin-changed]");
        if (by && what.by !== (window.shilianSession ? window.shilianSession.user : "")) {
          by.textContent = t("admin_changed_by", { user: what.by });
          by.hidden = false;
        }
      }).catch((e) => console.warn("admin", e));
    }
  }
  function view(path) {
    const tab = TABS.includes(path.split("?")[0]) ? path.split("?")[0] : "rules";
    let loaded = false, load = null;
    const me = { tab, load: null };
    current = me;
    return {
      key: `admin:${tab}`,
      async refresh() {
        if (loaded) return undefined;
        if ((await roleRank()) < ROLES.admin) {
          $("#view").innerHTML = `<p class="error" data-test="admin-only">${esc(t("admin_only"))}</p>`;
        } else {
          const box = frame(tab);
          load = tab === "users" ? usersView(box) : tab === "audit" ? auditView(box) : rulesView(box);
          me.load = load;
          await load();
        }
        loaded = true;
        markReady();
        return undefined;
      },
      dispose() { if (current === me) current = null; },
    };
  }

  async function start() {
    const link = $("[data-test=admin-link]");
    if (!link) return;
    link.textContent = t("admin_menu");
    link.hidden = (await roleRank()) < ROLES.admin;
  }

  return { view, start, changed };
})();
