// The alarm console ("#/alarms"): alarms open, acknowledged and closed, filtered by state,
// severity, county and time; acknowledge and close with a note; who did it and when. On the
// wall screen, the newest open critical alarm flashes under the header (with a sound only when
// the page is opened with "&sound=1": off by default).
// Loaded before app.js; uses its helpers (t, esc, api, fmtTime, pill...) when called.
"use strict";

window.shilianAlarms = (function () {
  // Alarms per page of the console: a duty shift's worth; older ones by the time filter.
  const PAGE = 100;
  // The wall re-reads the newest critical alarm on every live alarm event and at least this
  // often (an acknowledgement at another desk stops the flashing).
  const WALL_POLL_MS = 10000;
  // Pictures follow their alarm within the cameras' key-frame wait (5 s by default) and the
  // way to central: an alarm younger than this without pictures is asked again on each read.
  const SNAP_WAIT_S = 60;
  const STATES = ["open", "acked", "closed", "all"];
  const SEVERITIES = ["", "critical", "warning"];
  const SOUND = new URLSearchParams(location.search).get("sound") === "1";
  // Day boundaries of the date filter: China Standard Time, as the operators' clocks.
  const dayStart = (iso) => Date.parse(`${iso}T00:00:00+08:00`) / 1000;

  function kindText(k) { return eventKindName(k); } // app.js: the catalogue's name of a kind

  function who(step, key) {
    return step ? `<div data-test="alarm-${key}-by">${esc(t(`alarm_${key}_by`, { by: step.by, time: fmtTime(step.at) }))}${step.note ? `<br><span class="muted">${esc(step.note)}</span>` : ""}</div>` : "";
  }

  function view(query) {
    const root = $("#view");
    const params = new URLSearchParams(query || "");
    const f = { state: params.get("state") || "open", severity: params.get("severity") || "", county: params.get("county") || "", from: "", to: "" };
    const notes = {}; // alarm id -> note being typed (kept across re-reads)
    const messages = {}; // alarm id -> what the last action said
    const snaps = {}; // alarm id -> its snapshots (GET .../snapshots), once some arrived
    const checked = {}; // alarm id -> asked for its snapshots at least once
    let shown = {}; // alarm id -> the alarm as last shown
    // Alarms another officer handled first stay on screen (with who and when) even when the
    // filter no longer lists them, until the filters change.
    let pinned = {};
    let rank = null, counties = [];
    root.innerHTML = `<section class="card" data-test="alarm-console">
      <div class="tools">
        <h2 style="flex:1">${esc(t("alarm_console_title"))} <span class="muted" data-test="alarm-total"></span></h2>
        <label>${esc(t("col_state"))} <select data-test="alarm-state">${STATES.map((s) => `<option value="${s}">${esc(t(`alarm_state_${s}`))}</option>`).join("")}</select></label>
        <label>${esc(t("alarm_severity"))} <select data-test="alarm-severity">${SEVERITIES.map((s) => `<option value="${s}">${esc(s ? t(`severity_${s}`) : t("filter_all"))}</option>`).join("")}</select></label>
        <label>${esc(t("alarm_county"))} <select data-test="alarm-county"><option value="">${esc(t("filter_all"))}</option></select></label>
        <label>${esc(t("alarm_from"))} <input type="date" data-test="alarm-from"></label>
        <label>${esc(t("alarm_to"))} <input type="date" data-test="alarm-to"></label>
      </div>
      <div class="table-wrap tall" data-test="alarm-table"></div></section>`;
    const sel = (name) => $(`[data-test=alarm-${name}]`, root);
    sel("state").value = f.state;
    sel("severity").value = f.severity;
    for (const name of ["state", "severity", "county", "from", "to"]) {
      sel(name).addEventListener("change", () => { f[name] = sel(name).value; pinned = {}; load(); });
    }

    async function load() {
      if (rank === null) rank = await roleRank();
      if (!counties.length) {
        const scope = await api(coveragePath(BOOT.scope));
        counties = BOOT.scope.length >= 6 ? [scope.unit] : scope.unit.level === 2 ? scope.children
          : []; // a province: counties are picked from the search, not a list of a hundred
        sel("county").innerHTML = `<option value="">${esc(t("filter_all"))}</option>` + counties.map((c) => `<option value="${c.code}">${esc(c.name)}</option>`).join("");
        sel("county").value = f.county;
      }
      const q = new URLSearchParams({ state: f.state === "all" ? "all" : f.state, order: "newest", limit: String(PAGE) });
      if (f.severity) q.set("severity", f.severity);
      if (f.county) q.set("county", f.county);
      if (f.from) q.set("since", String(dayStart(f.from)));
      if (f.to) q.set("until", String(dayStart(f.to) + 86400));
      const r = await api(`/api/v1/alarms?${q}`);
      render(r);
    }

    function render(r) {
      sel("total").textContent = t("alarm_total", { n: fmtInt(r.total) });
      const listed = new Set(r.alarms.map((a) => String(a.id)));
      const rows = Object.values(pinned).filter((a) => !listed.has(String(a.id))).concat(r.alarms);
      shown = Object.fromEntries(rows.map((a) => [String(a.id), a]));
      const box = sel("table");
      if (!rows.length) { box.innerHTML = `<p class="muted" data-test="alarm-none">${esc(t("alarm_none"))}</p>`; return; }
      box.innerHTML = `<table><thead><tr><th>${esc(t("col_time"))}</th><th>${esc(t("alarm_severity"))}</th><th>${esc(t("col_kind"))}</th>
        <th>${esc(t("col_village"))}</th><th>${esc(t("col_node"))}</th><th>${esc(t("col_state"))}</th><th>${esc(t("alarm_handling"))}</th><th></th></tr></thead>
        <tbody>${rows.map((a) => `<tr data-alarm="${a.id}" data-state="${a.state}" data-severity="${a.severity}" class="${a.severity}">
          <td>${esc(fmtTime(a.ts))}</td>
          <td>${pill(a.severity === "critical" ? "alarm" : "device", t(`severity_${a.severity}`))}</td>
          <td data-test="alarm-kind">${esc(kindText(a.kind))}</td>
          <td>${a.county_name ? `${esc(a.county_name)} › ` : ""}<a href="${unitHref(a.village)}">${esc(a.village_name || a.village)}</a></td>
          <td><a href="${nodeHref(a.node_id)}">${esc(a.node_id)}</a></td>
          <td>${pill(a.state === "open" ? "offline" : a.state === "acked" ? "device" : "online", t(`alarm_state_${a.state}`))}</td>
          <td class="wrap">${who(a.ack, "ack")}${who(a.close, "close")}</td>
          <td class="wrap">${actions(a)}${messages[a.id] ? `<div class="error-text" data-test="alarm-message">${esc(messages[a.id])}</div>` : ""}</td>
        </tr>`).join("")}</tbody></table>`;
      box.querySelectorAll("input[data-note]").forEach((i) => i.addEventListener("input", () => { notes[i.dataset.note] = i.value; }));
      showSnapshots(rows);
      box.querySelectorAll("button[data-do]").forEach((b) => b.addEventListener("click", () => act(b.dataset.id, b.dataset.do, b)));
    }

    // The pictures the cameras of each alarm's zone took, beside its kind (a click opens the
    // JPEG). Fetched once per alarm when found; an alarm without any is asked again only while
    // its pictures may still be on their way (SNAP_WAIT_S after it arrived).
    async function showSnapshots(rows) {
      const now = Date.now() / 1000;
      await Promise.all(rows.map(async (a) => {
        if (!snaps[a.id] && (!checked[a.id] || now - a.recv_ts < SNAP_WAIT_S)) {
          checked[a.id] = true;
          try {
            const r = (await api(`/api/v1/alarms/${a.id}/snapshots`)).snapshots;
            if (r.length) snaps[a.id] = r;
          } catch (e) {
            console.warn("snapshots", e);
          }
        }
        const cell = sel("table").querySelector(`tr[data-alarm="${a.id}"] [data-test=alarm-kind]`);
        if (!cell || !snaps[a.id] || cell.querySelector("img")) return;
        cell.insertAdjacentHTML("beforeend", `<div class="snaps">${snaps[a.id].map((x) =>
          `<a href="${esc(x.url)}" target="_blank"><img data-test="console-snapshot" data-camera="${esc(x.camera)}" src="${esc(x.url)}"
            height="54" alt="${esc(t("snapshot_of", { camera: x.camera }))}" title="${esc(x.camera)}"></a>`).join("")}</div>`);
      }));
    }

    function actions(a) {
      if (rank < ROLES.operator || a.state === "closed") return "";
      const step = a.state === "open" ? "ack" : "close";
      return `<input type="text" data-note="${a.id}" data-test="alarm-note" maxlength="1000" placeholder="${esc(t("alarm_note"))}" value="${esc(notes[a.id] || "")}">
        <button type="button" data-do="${step}" data-id="${a.id}" data-test="alarm-${step}">${esc(t(step === "ack" ? "action_ack" : "action_close"))}</button>`;
    }

    async function act(id, step, button) {
      button.disabled = true;
      try {
        await api(`/api/v1/alarms/${id}/${step}`, "POST", { note: notes[id] || "" });
        delete notes[id];
        delete messages[id];
      } catch (e) {
        // Someone else was quicker: say who and when, from the alarm as it is now.
        if (e.code === "already_acked" || e.code === "already_closed") {
          const was = shown[id];
          const q = new URLSearchParams({ state: "all", node: was.node_id, since: String(was.ts), until: String(was.ts + 0.001) });
          const a = (await api(`/api/v1/alarms?${q}`)).alarms.find((x) => String(x.id) === String(id));
          const s = a && (e.code === "already_acked" ? a.ack : a.close);
          if (a) pinned[id] = a;
          messages[id] = s ? t(`alarm_already_${e.code === "already_acked" ? "acked" : "closed"}`, { by: s.by, time: fmtTime(s.at) }) : e.message;
        } else {
          messages[id] = t("action_failed", { message: e.message });
        }
      }
      await load();
    }

    return { key: `a:${query || ""}`, async refresh() { await load(); markReady(); }, dispose() {} };
  }

  // -- the wall screen's flashing alarm -------------------------------------------------------

  let wallTimer = null, beeped = null;
  async function wallCheck() {
    if (wallTimer !== null) clearTimeout(wallTimer);
    wallTimer = setTimeout(wallCheck, WALL_POLL_MS);
    const box = document.querySelector("[data-test=wall-alarm]");
    try {
      const r = await api("/api/v1/alarms?state=open&severity=critical&order=newest&limit=1");
      const a = r.alarms[0];
      box.hidden = !a;
      box.dataset.alarm = a ? String(a.id) : "";
      box.innerHTML = a ? `<a href="#/alarms">${esc(t("wall_alarm", { kind: kindText(a.kind), village: a.village_name || a.village, time: fmtTime(a.ts) }))}</a>
        ${r.total > 1 ? `<span>${esc(t("wall_alarm_more", { n: fmtInt(r.total - 1) }))}</span>` : ""}` : "";
      if (a && SOUND && beeped !== a.id) { beeped = a.id; beep(); }
    } catch (e) {
      console.warn("wall alarm", e);
    }
  }

  function beep() {
    try {
      const ctx = new AudioContext();
      const osc = ctx.createOscillator();
      osc.frequency.value = 880;
      osc.connect(ctx.destination);
      osc.start();
      osc.stop(ctx.currentTime + 0.6);
    } catch (e) {
      console.warn("alarm sound", e);
    }
  }

  function start() {
    const link = document.querySelector("[data-test=alarms-link]");
    if (!BOOT.alarms) return;
    link.hidden = false;
    link.textContent = t("alarm_console_title");
    if (BOOT.wall) {
      const box = document.createElement("section");
      box.className = "wall-alarm";
      box.dataset.test = "wall-alarm";
      box.dataset.sound = SOUND ? "on" : "off";
      box.hidden = true;
      document.querySelector("header").after(box);
      wallCheck();
    }
  }

  return {
    view,
    start,
    // A live "event" message: an alarm re-reads the wall's flashing alarm at once.
    onEvent(e) { if (BOOT.wall && BOOT.alarms && e.priority === "alarm") wallCheck(); },
  };
})();
