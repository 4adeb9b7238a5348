// The operators' dashboard. Plain browser JavaScript, no build step: central serves
// this file as it is. Routes (location.hash): "#/" the scope's overview, "#/u/<code>" a unit,
// "#/n/<node id>" a node, "#/alarms" the alarm console (alarms.js), "#/admin/<tab>" the admin
// pages (admin.js). Figures come from central's API; a server-sent events stream
// (/api/v1/live) says when they changed, and the view re-reads them (throttled).
// BOOT, LANG, t, $, esc and api are kit.js's, which every page loads first.
"use strict";

const LOCALE = LANG === "en" ? "en-GB" : "zh-CN";
// 南宁市's county shapes predate the 2021 renaming of 横县 (450127) to 横州市 (450181):
// features join the registry by code, and this maps the one renamed unit.
const RENAMED = { "450127": "450181" };
// Districts too small on the city map for a two-line label (南宁's urban districts).
const SMALL_AREAS = new Set(["450102", "450103", "450105", "450107", "450108", "450109"]);
// Map names registered by the vendored shape files, by city code.
const SHAPES = { "4501": "南宁" };
// Re-read the view at most this often while changes stream in (a churning fleet changes every
// second; the 2 s "on screen" requirement leaves room for one read).
const REFRESH_MIN_MS = 1000;
const REFRESH_FIRST_MS = 100;
// Wall screen: seconds each county stays in focus (``&rotate=S`` overrides, 2 to 600 s).
const WALL_ROTATE_MS = 1000 * Math.min(600, Math.max(2, Number(new URLSearchParams(location.search).get("rotate")) || 8));
const WEAKEST_SHOWN = 6;
// Firing alerts listed in the banner (the rest are counted); the banner re-reads the alerts on
// every "alert" message of the live stream and at least this often (their since-when ages).
const ALERTS_SHOWN = 5;
const ALERTS_POLL_MS = 30000;
// Last-seen filter of the drill-down tables: seconds a node has not been heard from.
const SEEN = { any: 0, "1h": 3600, "24h": 86400, "7d": 7 * 86400 };
// Nodes read for the last-seen filter: pages of the API's maximum, at most this many.
const SEEN_MAX_NODES = 5000;
const ROLES = { viewer: 1, operator: 2, admin: 3 };
// The trend changes once a day (and its live last point slowly): re-read it at most this often.
const TREND_REFRESH_MS = 60000;

const COLON = LANG === "en" ? ": " : "：";
const SEMI = LANG === "en" ? "; " : "；";
const NUM = new Intl.NumberFormat(LOCALE);
const DATE = new Intl.DateTimeFormat(LOCALE, {
  year: "numeric", month: LANG === "en" ? "short" : "long", day: "numeric",
  hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false,
});

const fmtInt = (n) => NUM.format(n);
const fmtPct = (r) => `${(r * 100).toFixed(2)}%`;
const fmtTime = (ts) => (ts == null ? "—" : DATE.format(new Date(ts * 1000)));
const DAY = new Intl.DateTimeFormat(LOCALE, { month: LANG === "en" ? "short" : "long", day: "numeric", timeZone: "Asia/Shanghai" });
const fmtDay = (iso) => DAY.format(new Date(`${iso}T12:00:00+08:00`));
function fmtDuration(s) {
  const d = Math.floor(s / 86400), h = Math.floor((s % 86400) / 3600), m = Math.floor((s % 3600) / 60);
  if (d) return t("days", { d, h });
  if (h) return t("hours", { h, m });
  return t("minutes", { m });
}
function el(html) {
  const tpl = document.createElement("template");
  tpl.innerHTML = html.trim();
  return tpl.content.firstElementChild;
}
// The whole country's scope is the empty code: its coverage is /api/v1/coverage.
const coveragePath = (code) => (code ? `/api/v1/coverage/${code}` : "/api/v1/coverage");
const unitHref = (code) => `#/u/${code}`;
const nodeHref = (id) => `#/n/${encodeURIComponent(id)}`;
// Coverage colour steps, highest first: the ranking bars and the map use the same ones, so a
// county has one colour wherever it is shown.
const RATIO_STEPS = [[0.9, "#2fbf71"], [0.75, "#8bc34a"], [0.5, "#f2a93b"], [0, "#e5484d"]];
// The meeting page (meeting.js) is its own page: calls survive navigating the dashboard's views.
// 1:N broadcast to the villages of a unit (broadcast.js); the page lists them for choosing.
const broadcastHref = (code) => `/dashboard/broadcast?code=${encodeURIComponent(code)}${LANG === "en" ? "&lang=en" : ""}`;
const meetingHref = (id) => `/dashboard/meeting?node=${encodeURIComponent(id)}${LANG === "en" ? "&lang=en" : ""}`;
function ratioColor(r) {
  return RATIO_STEPS.find(([min]) => r >= min)[1];
}

// The logged-in user's role (session.js, central.auth); without logins everything is allowed.
async function roleRank() {
  if (!window.shilianSessionReady) return ROLES.admin;
  const s = await window.shilianSessionReady;
  return s ? ROLES[s.role] || 0 : 0;
}

// -- shared state ------------------------------------------------------------------------------

const shilian = (window.__shilian = { ready: null, refreshes: 0, charts: {} });
const fresh = window.shilianFreshness; // freshness.js: the badge, the stale banner
let view = null; // the current view: { key, refresh(), dispose() }

function chart(name, node) {
  const c = echarts.init(node, null, { renderer: "canvas" });
  shilian.charts[name] = c;
  // A chart fills its box, which changes without a window resize too (the wall's rows settle as
  // figures arrive; a banner appears).
  new ResizeObserver(() => { if (!c.isDisposed()) { c.resize(); restyleSoon(0); } }).observe(node);
  return c;
}
// Chart type in px: the desk's fixed size, or on the wall ``wallEm`` of the page's type (which
// follows the viewport, app.css), so charts scale with the screen like the text around them.
function chartPx(desk, wallEm) {
  return BOOT.wall ? Math.round(wallEm * parseFloat(getComputedStyle(document.body).fontSize)) : desk;
}
// A bar ranking's names: the chart's type, but never taller than a bar's slot, so that every
// name is shown (none skipped) and none overlaps the next in a short box (the wall with banners).
function rankFont(c, n) {
  return Math.max(8, Math.min(chartPx(12, 0.8), Math.floor((0.8 * (c.getHeight() - 24)) / Math.max(1, n))));
}
// Charts follow their boxes: their size at once, and on the wall their type too, once for all
// charts (a box resized: next turn; a window being dragged: once it settles).
const RESTYLE_MS = 200;
let restyleTimer = null;
function restyleSoon(wait = RESTYLE_MS) {
  if (!BOOT.wall) return;
  clearTimeout(restyleTimer);
  restyleTimer = setTimeout(() => { if (view && view.restyle) view.restyle(); }, wait);
}
window.addEventListener("resize", () => {
  Object.values(shilian.charts).forEach((c) => c.resize());
  restyleSoon();
});

function markReady() {
  if (shilian.ready === null) {
    shilian.ready = performance.now();
    document.body.dataset.ready = "1";
  }
}

function crumbs(ancestors, unit) {
  const parts = ancestors.map((a) => `<a href="${unitHref(a.code)}">${esc(a.name)}</a>`);
  if (unit) parts.push(`<span>${esc(unit.name)}</span>`);
  $("[data-test=crumbs]").innerHTML = parts.join(" › ");
}

function pill(kind, text) { return `<span class="pill ${kind}">${esc(text)}</span>`; }
function priorityPill(p) { return pill(p, t(`priority_${p}`)); }
function kindName(k) { return BOOT.strings[`kind_${k}`] ? t(`kind_${k}`) : k; }
function reasonText(r) { return BOOT.strings[`reason_${r}`] ? t(`reason_${r}`) : r; }

function eventsList(events) {
  if (!events.length) return `<p class="muted">${esc(t("no_events"))}</p>`;
  return `<ul class="events">${events.map((e) => `<li data-event="${e.id ?? ""}">
    ${priorityPill(e.priority)} <span class="muted">${esc(fmtTime(e.ts))}</span>
    ${e.village_name ? `<a href="${unitHref(e.village)}">${esc(e.village_name)}</a>` : ""}
    <a href="${nodeHref(e.node_id)}">${esc(e.node_id)}</a> <span data-kind="${esc(e.kind)}">${esc(eventKindName(e.kind))}</span>${e.device ? ` · ${esc(e.device)}` : ""}
  </li>`).join("")}</ul>`;
}

// -- date range of the trend and the reports ---------------------------------------------------
// The range is two local (Asia/Shanghai) days, both included, kept in the page's address
// (?since=YYYY-MM-DD&until=YYYY-MM-DD) so a reload, a drill-down or the language switch keeps it;
// the trend and the report links ask central for exactly it (docs/api.md). Without one in the
// address it is the last RANGE_DEFAULT_DAYS days up to central's today.

const RANGE_PRESETS = [7, 30, 90];
const RANGE_DEFAULT_DAYS = 30;
// central.history.MAX_RANGE_DAYS: central refuses longer ranges, so the page says so first.
const RANGE_MAX_DAYS = 366;
const ISO_DAY = new Intl.DateTimeFormat("en-CA", { timeZone: "Asia/Shanghai", year: "numeric", month: "2-digit", day: "2-digit" });
const isoDay = (ts) => ISO_DAY.format(new Date(ts * 1000)); // central's time → its local day
const addDays = (iso, n) => new Date(Date.parse(`${iso}T00:00:00Z`) + n * 86400000).toISOString().slice(0, 10);
const dayDiff = (a, b) => Math.round((Date.parse(`${b}T00:00:00Z`) - Date.parse(`${a}T00:00:00Z`)) / 86400000);
const validDay = (iso) => /^\d{4}-\d{2}-\d{2}$/.test(iso) && !Number.isNaN(Date.parse(`${iso}T00:00:00Z`)) && addDays(iso, 0) === iso;

function presetRange(days, today) { return { since: addDays(today, 1 - days), until: today }; }

// The range in the address, or the default one ending ``today`` (central's local day).
function readRange(today) {
  const q = new URLSearchParams(location.search);
  if (!q.has("since") && !q.has("until")) return presetRange(RANGE_DEFAULT_DAYS, today);
  return { since: q.get("since") || "", until: q.get("until") || today };
}

// The catalogue key of what is wrong with a range, or null.
function rangeProblem(r) {
  if (!validDay(r.since) || !validDay(r.until)) return "range_bad_date";
  if (r.since > r.until) return "range_order";
  if (dayDiff(r.since, r.until) >= RANGE_MAX_DAYS) return "range_too_long";
  return null;
}

function writeRange(r) {
  const q = new URLSearchParams(location.search);
  q.set("since", r.since);
  q.set("until", r.until);
  history.replaceState(history.state, "", `${location.pathname}?${q}${location.hash}`);
  updateLangLink();
}

const rangeQuery = (r) => `since=${r.since}&until=${r.until}`;

// The picker: presets, the two dates, the message of a wrong range. ``onChange(range)`` gets
// every valid range the user picks; a wrong one is only explained.
function rangePicker(box, today, onChange) {
  box.innerHTML = `${RANGE_PRESETS.map((d) => `<button type="button" data-test="range-preset" data-days="${d}">${esc(t("range_preset", { n: d }))}</button>`).join("")}
    <label>${esc(t("range_since"))} <input type="date" data-test="range-since"></label>
    <label>${esc(t("range_until"))} <input type="date" data-test="range-until"></label>
    <span class="error-text" data-test="range-error" role="alert" hidden></span>`;
  const since = $("[data-test=range-since]", box), until = $("[data-test=range-until]", box);
  const error = $("[data-test=range-error]", box);
  const show = (r) => {
    since.value = validDay(r.since) ? r.since : "";
    until.value = validDay(r.until) ? r.until : "";
    box.querySelectorAll("[data-test=range-preset]").forEach((b) => {
      b.classList.toggle("on", r.until === today && dayDiff(r.since, r.until) + 1 === Number(b.dataset.days));
    });
  };
  const pick = (r) => {
    const problem = rangeProblem(r);
    error.hidden = problem === null;
    error.textContent = problem ? t(problem, { max: RANGE_MAX_DAYS }) : "";
    if (problem) return;
    show(r);
    writeRange(r);
    onChange(r);
  };
  box.querySelectorAll("[data-test=range-preset]").forEach((b) => b.addEventListener("click", () => pick(presetRange(Number(b.dataset.days), today))));
  for (const input of [since, until]) input.addEventListener("change", () => pick({ since: since.value, until: until.value }));
  const first = readRange(today);
  show(first);
  const problem = rangeProblem(first);
  error.hidden = problem === null;
  error.textContent = problem ? t(problem, { max: RANGE_MAX_DAYS }) : "";
  return {
    current: () => { const r = readRange(today); return rangeProblem(r) ? null : r; },
    failed(message) { error.hidden = false; error.textContent = message; },
  };
}

// -- city map ---------------------------------------------------------------------------------
// Every county is labelled, none hidden for overlapping. Each county shows its name and figure
// on its shape; the small urban districts, packed too tightly for that, are labelled in a column
// left of the map (in the north-to-south order of their label points), each joined to its
// district by a leader line; their figures are in the tooltip and the ranking beside the map.

// The county in focus on the wall (app.css --focus): unlike the ratio steps and the warnings.
const FOCUS = getComputedStyle(document.documentElement).getPropertyValue("--focus").trim();
// Space between the column of callouts and the map, and between callouts, in label heights.
const CALLOUT_GAP = 0.8;
const CALLOUT_STEP = 1.6;

function mapOption(mapName, items, layout) {
  return {
    animation: false,
    tooltip: { trigger: "item", formatter: (p) => (p.data ? `${esc(p.data.unit)}<br>${fmtPct(p.data.ratio)} (${fmtInt(p.data.covered)} / ${fmtInt(p.data.villages)})` : "") },
    // The legend of the colour steps (top left, where the city's shape leaves room); each area
    // is coloured by ratioColor.
    visualMap: { type: "piecewise", show: true, left: 8, top: 8, textStyle: { color: "#e6edf5", fontSize: chartPx(12, 0.7) },
      itemWidth: chartPx(20, 1.1), itemHeight: chartPx(14, 0.75), itemGap: chartPx(10, 0.4),
      pieces: RATIO_STEPS.map(([min, color], i) => ({ gte: min * 100, ...(i ? { lt: RATIO_STEPS[i - 1][0] * 100 } : {}), color,
        label: i ? `${min * 100}%–${RATIO_STEPS[i - 1][0] * 100}%` : `≥ ${min * 100}%` })) },
    series: [{ type: "map", map: mapName, roam: false, selectedMode: false,
      layoutCenter: ["50%", "50%"], layoutSize: "100%",
      label: { show: true, color: "#0f1c2e", fontSize: chartPx(11, 0.75),
        formatter: (p) => (p.data ? (p.data.small ? p.data.unit.replace(/区$/, "") : `${p.data.unit}\n${fmtPct(p.data.ratio)}`) : p.name) },
      labelLine: { show: false }, labelLayout: layout,
      itemStyle: { borderColor: "#0f1c2e" },
      emphasis: { label: { color: "#000" }, itemStyle: { areaColor: FOCUS, borderColor: "#fff", borderWidth: 2 } },
      data: items }],
  };
}

// ECharts' labelLayout callback placing the small districts' labels in their column. The
// column's right edge is the map's west edge (from the shapes' longitudes, through the chart's
// own projection), centred on the districts' mean height.
function calloutLayout(chartInst, mapName, items) {
  let west = null; // the shapes' westernmost longitude and a latitude
  let centres = null; // district code -> [lng, lat] of its label point
  return (p) => {
    const all = items();
    const d = all[p.dataIndex];
    if (!d || !d.small) return {};
    if (west === null) {
      const geo = echarts.getMap(mapName);
      const json = geo.geoJSON || geo.geoJson;
      centres = {};
      west = [Infinity, 0];
      const visit = (c) => { if (typeof c[0] === "number") { if (c[0] < west[0]) west = [c[0], c[1]]; } else c.forEach(visit); };
      for (const f of json.features) {
        visit(f.geometry.coordinates);
        centres[f.properties.name] = f.properties.cp;
      }
    }
    const px = (lngLat) => chartInst.convertToPixel({ seriesIndex: 0 }, lngLat);
    const small = all.filter((x) => x.small && centres[x.name]).map((x) => ({ code: x.name, y: px(centres[x.name])[1] }));
    small.sort((a, b) => a.y - b.y);
    const i = small.findIndex((x) => x.code === d.name);
    if (i < 0) return {};
    const h = p.labelRect.height;
    const mid = small.reduce((sum, x) => sum + x.y, 0) / small.length;
    // ECharts draws the leader line from the label to the nearest point of the district's outline.
    return { x: px(west)[0] - CALLOUT_GAP * h, y: mid + (i - (small.length - 1) / 2) * CALLOUT_STEP * h, align: "right", verticalAlign: "middle" };
  };
}

// -- unit view (the overview is the scope's unit view) --------------------------------------------

const COLUMNS = [
  { key: "name", num: false }, { key: "code", num: false }, { key: "villages", num: true },
  { key: "provisioned", num: true }, { key: "covered", num: true }, { key: "ratio", num: true },
];
const FILTERS = {
  all: () => true,
  partial: (u) => u.covered < u.villages,
  uncovered: (u) => u.covered === 0,
  never: (u) => u.provisioned === 0,
};

function childState(u) {
  if (u.covered) return ["covered", t("state_covered")];
  if (u.provisioned) return ["uncovered", t("state_uncovered")];
  return ["never", t("state_never")];
}

function unitView(code) {
  const isVillage = code.length === 12;
  const root = $("#view");
  const sort = { key: "ratio", dir: 1 };
  let filter = "all";
  let data = null;
  let wallTimer = null, wallIndex = -1;
  const hasMap = BOOT.maps.includes(code) && SHAPES[code] && typeof echarts.getMap === "function" && echarts.getMap(SHAPES[code]);
  const hasRank = !isVillage && code.length < 9;
  const eventsFirst = !hasMap && hasRank; // beside the ranking when there is no map
  const video = videoView(code, hasRank); // video.js: the stricter figure and the devices
  const events = `<section class="card ${BOOT.wall ? "span12" : eventsFirst ? "span5" : "span4"}"><h2>${esc(t("events_title"))}</h2><div data-test="events"></div></section>`;
  root.innerHTML = `
    <div class="grid">
      <section class="card headline span6" data-test="headline">
        <h2><span data-test="unit-name"></span> · ${esc(t("headline"))} · <a data-test="broadcast-link" href="${broadcastHref(code)}">${esc(t("broadcast_open"))}</a></h2>
        <div class="big" data-test="ratio"></div>
        <div class="sub" data-test="covered-of"></div>
        <div class="sub" data-test="provisioned"></div>
        <div class="sub" data-test="devices-summary"></div>
      </section>
      <section class="card stat ok span2"><h2>${esc(t("nodes_online"))}</h2><div class="big" data-test="nodes-online"></div></section>
      <section class="card stat bad span2"><h2>${esc(t("nodes_offline"))}</h2><div class="big" data-test="nodes-offline"></div></section>
      <a class="card stat warn span2 link" data-test="alarms-card" href="#/alarms${code.length === 6 ? `?county=${code}` : ""}" ${BOOT.alarms ? "" : "hidden"}><h2>${esc(t("alarms_open"))}</h2><div class="big" data-test="alarms-open"></div></a>
      ${video.html}
      ${hasMap ? `<section class="card span7"><h2>${esc(t("map_title"))}</h2><div class="chart" data-test="map"></div></section>` : ""}
      ${hasRank ? `<section class="card ${hasMap ? "span5" : "span7"}"><h2>${esc(t("rank_title"))}</h2><div class="chart" data-test="rank"></div></section>` : ""}
      ${eventsFirst ? events : ""}
      ${isVillage ? "" : `<section class="card span12" data-test="trend-card"><div class="tools"><h2 style="flex:1">${esc(t("trend_title"))}</h2>
        <div class="tools range" data-test="range"></div></div>
        <p class="muted" data-test="trend-none" hidden>${esc(t("trend_none"))}</p><div class="chart small" data-test="trend"></div></section>`}
      ${BOOT.wall && code === BOOT.scope ? `<section class="card span12" data-test="wall-focus"></section>` : ""}
      <section class="card ${eventsFirst ? "span12" : "span8"}" ${BOOT.wall ? "hidden" : ""}>
        <div class="tools">
          <h2 style="flex:1">${esc(t(isVillage ? "nodes_title" : "children_title"))}</h2>
          ${isVillage ? "" : `<label>${esc(t("filter_label"))} <select data-test="filter">
            ${Object.keys(FILTERS).map((f) => `<option value="${f}">${esc(t(`filter_${f}`))}</option>`).join("")}
          </select></label>
          <label>${esc(t("seen_label"))} <select data-test="seen-filter">
            ${Object.keys(SEEN).map((f) => `<option value="${f}">${esc(t(`seen_${f}`))}</option>`).join("")}
          </select></label>
          <a data-test="csv" href="/api/v1/dashboard/coverage.csv?code=${code}" download>${esc(t("download_csv"))}</a>
          <a data-test="report-xlsx" href="/api/v1/reports/coverage.xlsx?code=${code}" data-href="/api/v1/reports/coverage.xlsx?code=${code}" download>${esc(t("download_xlsx"))}</a>
          <a data-test="report-page" href="/dashboard/report?code=${code}${LANG === "en" ? "&lang=en" : ""}" data-href="/dashboard/report?code=${code}${LANG === "en" ? "&lang=en" : ""}" target="_blank">${esc(t("report_link"))}</a>`}
        </div>
        <div class="table-wrap" data-test="table"></div>
      </section>
      ${eventsFirst ? "" : events}
    </div>`;

  video.mount(root);
  let map = null, rank = null, mapItems = [], mapLayout = null;
  if (hasMap) {
    const geo = echarts.getMap(SHAPES[code]);
    const src = geo.geoJSON || geo.geoJson;
    const mapName = `shilian-${code}`;
    if (!echarts.getMap(mapName)) {
      const features = src.features.map((f) => {
        const fc = RENAMED[String(f.id)] || String(f.id);
        return { ...f, properties: { ...f.properties, name: fc } };
      });
      echarts.registerMap(mapName, { ...src, features });
    }
    map = chart("map", $("[data-test=map]", root));
    mapLayout = calloutLayout(map, mapName, () => mapItems);
    map.on("click", (p) => { if (p.data) location.hash = unitHref(p.data.name); });
    map.on("finished", markReady);
  }
  const rankNode = $("[data-test=rank]", root);
  if (rankNode) {
    rank = chart("rank", rankNode);
    rank.on("click", (p) => { if (p.data && p.data.code) location.hash = unitHref(p.data.code); });
  }
  const filterSel = $("[data-test=filter]", root);
  if (filterSel) filterSel.addEventListener("change", () => { filter = filterSel.value; renderTable(); });
  // Last-seen filter: the nodes under the unit not heard from for the chosen time, by child.
  let seen = "any", unseen = null; // unseen: child code -> nodes not seen (null: filter off)
  const seenSel = $("[data-test=seen-filter]", root);
  if (seenSel) seenSel.addEventListener("change", async () => {
    seen = seenSel.value;
    await loadUnseen();
    renderTable();
  });
  async function loadUnseen() {
    if (seen === "any" || !data) { unseen = null; return; }
    const param = code.length === 6 ? `county=${code}&` : code.length === 9 ? `township=${code}&` : "";
    const before = data.overview.time - SEEN[seen]; // central's clock, not the browser's
    const counts = {};
    for (let offset = 0; offset < SEEN_MAX_NODES; offset += 1000) {
      const r = await api(`/api/v1/nodes?${param}seen_before=${before}&limit=1000&offset=${offset}`);
      for (const n of r.nodes) {
        if (!n.village.startsWith(code)) continue;
        const child = data.coverage.children.find((c) => n.village.startsWith(c.code));
        if (child) counts[child.code] = (counts[child.code] || 0) + 1;
      }
      if (offset + r.nodes.length >= r.total) break;
    }
    unseen = counts;
    root.dataset.seen = seen;
  }

  function renderTable() {
    const box = $("[data-test=table]", root);
    if (isVillage) {
      const nodes = data.coverage.nodes || [];
      box.innerHTML = nodes.length ? `<table data-test="nodes-table"><thead><tr>
          <th>${esc(t("col_node"))}</th><th>${esc(t("col_state"))}</th><th>${esc(t("col_since"))}</th><th>${esc(t("col_last_seen"))}</th>
        </tr></thead><tbody>${nodes.map((n) => `<tr class="link" data-node="${esc(n.node_id)}" data-state="${n.state}">
          <td><a href="${nodeHref(n.node_id)}">${esc(n.node_id)}</a> · <a data-test="meeting-link" href="${meetingHref(n.node_id)}">${esc(t("meeting_open"))}</a></td><td>${pill(n.state, t(`state_${n.state}`))} <span class="muted">${esc(reasonText(n.state_reason))}</span></td>
          <td>${esc(fmtTime(n.state_since))}</td><td>${esc(fmtTime(n.last_seen))}</td></tr>`).join("")}</tbody></table>`
        : `<p class="muted">${esc(t("no_nodes"))}</p>`;
      box.querySelectorAll("tr[data-node]").forEach((tr) => tr.addEventListener("click", (ev) => {
        if (ev.target.closest("[data-test=meeting-link]")) return; // leaves for the meeting page
        location.hash = nodeHref(tr.dataset.node);
      }));
      return;
    }
    const rows = data.coverage.children.filter(FILTERS[filter]).filter((u) => !unseen || unseen[u.code]).slice();
    const k = sort.key;
    rows.sort((a, b) => (a[k] < b[k] ? -sort.dir : a[k] > b[k] ? sort.dir : a.code < b.code ? -1 : 1));
    const villages = data.coverage.children.length && data.coverage.children[0].level === 5;
    box.innerHTML = `<table data-test="children-table"><thead><tr>
      ${COLUMNS.map((c) => `<th data-sort="${c.key}" class="${c.num ? "num" : ""} ${sort.key === c.key ? `sorted ${sort.dir > 0 ? "asc" : "desc"}` : ""}">${esc(t(`col_${c.key}`))}</th>`).join("")}
      ${villages ? `<th>${esc(t("col_state"))}</th>` : ""}${unseen ? `<th class="num">${esc(t("col_unseen"))}</th>` : ""}
      </tr></thead><tbody>${rows.map((u) => `<tr class="link" data-code="${u.code}">
        <td data-col="name"><a href="${unitHref(u.code)}">${esc(u.name)}</a></td><td data-col="code" class="muted">${u.code}</td>
        <td data-col="villages" class="num">${fmtInt(u.villages)}</td><td data-col="provisioned" class="num">${fmtInt(u.provisioned)}</td>
        <td data-col="covered" class="num">${fmtInt(u.covered)}</td><td data-col="ratio" class="num">${u.level === 5 && u.provisioned === 0 ? `<span class="muted">${esc(t("state_never"))}</span>` : fmtPct(u.ratio)}</td>
        ${villages ? `<td data-col="state">${pill(...childState(u))}</td>` : ""}${unseen ? `<td data-col="unseen" class="num">${fmtInt(unseen[u.code])}</td>` : ""}</tr>`).join("")}</tbody></table>`;
    box.querySelectorAll("th[data-sort]").forEach((th) => th.addEventListener("click", () => {
      sort.dir = sort.key === th.dataset.sort ? -sort.dir : 1;
      sort.key = th.dataset.sort;
      renderTable();
    }));
    box.querySelectorAll("tr[data-code]").forEach((tr) => tr.addEventListener("click", (ev) => {
      if (ev.target.tagName !== "A") location.hash = unitHref(tr.dataset.code);
    }));
  }

  function renderCharts() {
    const kids = data.coverage.children;
    if (map) {
      mapItems = kids.map((u) => ({ name: u.code, value: +(u.ratio * 100).toFixed(2), unit: u.name, ratio: u.ratio, covered: u.covered, villages: u.villages,
        itemStyle: { areaColor: ratioColor(u.ratio) }, small: SMALL_AREAS.has(u.code),
        ...(SMALL_AREAS.has(u.code) ? { label: { color: "#e6edf5" }, labelLine: { show: true, lineStyle: { color: "#e6edf5", width: 1 } }, emphasis: { label: { color: FOCUS } } } : {}) }));
      map.setOption(mapOption(`shilian-${code}`, mapItems, mapLayout));
    }
    if (rank) {
      const ranked = kids.slice().sort((a, b) => a.ratio - b.ratio || b.code.localeCompare(a.code));
      rank.setOption({
        animation: false,
        grid: { left: 8, right: chartPx(64, 4), top: 8, bottom: 8, containLabel: true },
        tooltip: { trigger: "item", formatter: (p) => `${esc(p.name)}: ${fmtPct(p.data.ratio)} (${fmtInt(p.data.covered)} / ${fmtInt(p.data.villages)})` },
        xAxis: { type: "value", max: 100, axisLabel: { color: "#8fa3bb", formatter: "{value}%", fontSize: chartPx(12, 0.7) }, splitLine: { lineStyle: { color: "#26405f" } } },
        yAxis: { type: "category", data: ranked.map((u) => u.name), axisLabel: { color: "#e6edf5", fontSize: rankFont(rank, ranked.length), interval: 0 } },
        series: [{ type: "bar", data: ranked.map((u) => ({ value: +(u.ratio * 100).toFixed(2), code: u.code, ratio: u.ratio, covered: u.covered, villages: u.villages, itemStyle: { color: ratioColor(u.ratio) } })),
          label: { show: true, position: "right", color: "#e6edf5", fontSize: rankFont(rank, ranked.length), formatter: (p) => fmtPct(p.data.ratio) } }],
      });
    }
  }

  let trend = null, trendAt = -Infinity, picker = null, lastTrend = null;
  // The report links carry the picked range (the trend's: one range for both).
  function rangeLinks(r) {
    root.querySelectorAll("[data-test=report-xlsx], [data-test=report-page]").forEach((a) => {
      a.href = r ? `${a.dataset.href}&${rangeQuery(r)}` : a.dataset.href;
    });
  }
  async function loadTrend() {
    const card = $("[data-test=trend-card]", root);
    if (!card) return;
    if (!picker) {
      picker = rangePicker($("[data-test=range]", card), isoDay(data.overview.time), (r) => {
        trendAt = performance.now();
        rangeLinks(r);
        loadTrend();
      });
    }
    const range = picker.current();
    rangeLinks(range);
    if (!range) return; // the picker says what is wrong
    let r;
    try {
      r = await api(`/api/v1/history/coverage?code=${code}&${rangeQuery(range)}`);
    } catch (e) {
      picker.failed(e.message);
      return;
    }
    // Only where history exists: today's live figure alone is no trend.
    const none = r.days.length < 2;
    $("[data-test=trend-none]", card).hidden = !none;
    $("[data-test=trend]", card).hidden = none;
    card.dataset.days = String(r.days.length);
    card.dataset.range = `${r.from}/${r.to}`;
    if (none) return;
    lastTrend = r;
    drawTrend(r);
  }
  function drawTrend(r) {
    if (!trend) trend = chart("trend", $("[data-test=trend]", root));
    trend.setOption({
      animation: false,
      grid: { left: 8, right: 16, top: 16, bottom: 8, containLabel: true },
      tooltip: { trigger: "axis", formatter: (ps) => ps.map((p) => `${esc(fmtDay(p.data.day))}<br>${fmtPct(p.data.ratio)} (${fmtInt(p.data.covered)} / ${fmtInt(p.data.villages)})`).join("") },
      xAxis: { type: "category", data: r.days.map((d) => fmtDay(d.day)), axisLabel: { color: "#8fa3bb", fontSize: chartPx(12, 0.7) } },
      yAxis: { type: "value", scale: true, axisLabel: { color: "#8fa3bb", formatter: "{value}%", fontSize: chartPx(12, 0.7) }, splitLine: { lineStyle: { color: "#26405f" } } },
      series: [{ type: "line", smooth: false, symbolSize: chartPx(6, 0.35), lineStyle: { color: "#4aa3ff" }, itemStyle: { color: "#4aa3ff" },
        data: r.days.map((d) => ({ value: +(d.ratio * 100).toFixed(2), day: d.day, ratio: d.ratio, covered: d.covered, villages: d.villages, source: d.source })) }],
    }, { replaceMerge: ["series", "xAxis"] });
  }

  function render() {
    const { coverage, overview } = data;
    const u = coverage.unit;
    crumbs(coverage.ancestors, code === BOOT.scope ? null : u);
    $("[data-test=unit-name]", root).textContent = u.name;
    // A village without a node has no coverage to speak of: say so, not "0.00%".
    $("[data-test=ratio]", root).textContent = isVillage && u.provisioned === 0 ? t("no_nodes") : fmtPct(u.ratio);
    $("[data-test=ratio]", root).dataset.ratio = String(u.ratio);
    const cov = $("[data-test=covered-of]", root);
    cov.textContent = t("covered_of", { covered: fmtInt(u.covered), villages: fmtInt(u.villages) });
    cov.dataset.covered = String(u.covered);
    cov.dataset.villages = String(u.villages);
    const prov = $("[data-test=provisioned]", root);
    prov.textContent = t("provisioned_n", { n: fmtInt(u.provisioned) });
    prov.dataset.provisioned = String(u.provisioned);
    const kinds = {};
    for (const d of overview.devices) (kinds[d.kind] = kinds[d.kind] || []).push(`${t(`device_${d.state}`)} ${fmtInt(d.count)}`);
    $("[data-test=devices-summary]", root).textContent = Object.keys(kinds).length
      ? `${t("devices_title")}${COLON}${Object.entries(kinds).map(([k, v]) => `${kindName(k)} ${v.join(" / ")}`).join(SEMI)}` : "";
    $("[data-test=nodes-online]", root).textContent = fmtInt(overview.nodes.online);
    $("[data-test=nodes-offline]", root).textContent = fmtInt(overview.nodes.offline);
    if (overview.alarms_open != null) $("[data-test=alarms-open]", root).textContent = fmtInt(overview.alarms_open);
    $("[data-test=events]", root).innerHTML = eventsList(overview.events);
    renderTable();
    renderCharts();
    video.render(coverage);
    if (!map) markReady();
  }

  async function wallStep() {
    const box = $("[data-test=wall-focus]", root);
    if (!box || !data) return;
    const kids = data.coverage.children;
    if (!kids.length) return;
    wallIndex = (wallIndex + 1) % kids.length;
    const focus = kids[wallIndex];
    if (map) {
      map.dispatchAction({ type: "downplay", seriesIndex: 0 });
      map.dispatchAction({ type: "highlight", seriesIndex: 0, name: focus.code });
    }
    try {
      const sub = await api(coveragePath(focus.code));
      const weakest = sub.children.slice().sort((a, b) => a.ratio - b.ratio).slice(0, WEAKEST_SHOWN);
      box.dataset.code = focus.code;
      box.innerHTML = `<h2 data-test="wall-focus-label">${esc(t("wall_focus", { name: sub.unit.name }))}</h2>
        <div class="grid"><div class="span4 headline"><div class="big">${fmtPct(sub.unit.ratio)}</div>
        <div class="sub">${esc(t("covered_of", { covered: fmtInt(sub.unit.covered), villages: fmtInt(sub.unit.villages) }))}</div></div>
        <div class="span8"><div class="muted">${esc(t("wall_weakest"))}</div><table><tbody>${weakest.map((w) => `<tr><td>${esc(w.name)}</td>
        <td class="num">${fmtInt(w.covered)} / ${fmtInt(w.villages)}</td><td class="num">${fmtPct(w.ratio)}</td></tr>`).join("")}</tbody></table></div></div>`;
    } catch (e) {
      console.warn("wall focus", e);
    }
  }

  return {
    key: `u:${code}`,
    async refresh() {
      const pre = window.__shilianPrefetch; // started by index.html before the charting library
      window.__shilianPrefetch = null;
      const [coverage, overview] = await Promise.all(pre && pre.code === code ? [pre.coverage, pre.overview] : [
        api(coveragePath(code)),
        api(`/api/v1/dashboard/overview?code=${code}`),
      ]);
      data = { coverage, overview };
      fresh.linkRead(overview.link);
      if (unseen) await loadUnseen();
      render();
      await video.load();
      if (performance.now() - trendAt > TREND_REFRESH_MS) { trendAt = performance.now(); loadTrend(); } // not on the first paint's path
      if (BOOT.wall && code === BOOT.scope && wallTimer === null) {
        wallStep();
        wallTimer = setInterval(wallStep, WALL_ROTATE_MS);
      }
      return overview.time;
    },
    // The wall's charts and type after a resize (the figures as they are).
    restyle() {
      if (!data) return;
      render();
      if (lastTrend) drawTrend(lastTrend);
    },
    dispose() {
      if (wallTimer !== null) clearInterval(wallTimer);
    },
  };
}

// -- node view ------------------------------------------------------------------------------------

function nodeView(id) {
  const root = $("#view");
  root.innerHTML = `<div class="grid">
    <section class="card headline span4" data-test="node-state"></section>
    <section class="card span4"><h2>${esc(t("health_title"))}</h2><div data-test="health"></div></section>
    <section class="card span4"><div class="chart small" data-test="health-chart"></div></section>
    <section class="card span12"><h2>${esc(t("timeline_title"))}</h2><div data-test="timeline"></div></section>
    <section class="card span6"><h2>${esc(t("devices_title"))}</h2><div data-test="devices"></div></section>
    <section class="card span6"><h2>${esc(t("events_title"))}</h2><div data-test="node-events"></div></section>
    <section class="card span6"><h2>${esc(t("commissioning_title"))}</h2><div data-test="commissioning"></div></section>
    <section class="card span6"><h2>${esc(t("actions_title"))}</h2><div data-test="actions"></div><div data-test="open-alarms"></div></section>
  </div>`;
  const hchart = chart("health", $("[data-test=health-chart]", root));
  let ancestors = null, rank = null, actionsDrawn = false, devicesShown = [];
  async function alarmShots(alarmId) {
    try {
      return (await api(`/api/v1/alarms/${alarmId}/snapshots`)).snapshots;
    } catch (e) {
      console.warn("snapshots", e);
      return [];
    }
  }

  async function renderExtras() {
    // The commissioning report (provisioning) when there is one.
    const c = (await api(`/api/v1/dashboard/nodes/${encodeURIComponent(id)}/reports`)).commissioning;
    const box = $("[data-test=commissioning]", root);
    box.dataset.present = c ? "1" : "0";
    box.innerHTML = c ? `${pill(c.ok ? "online" : "offline", c.ok ? "✓" : "✗")} ${esc(fmtTime(c.uploaded_at))}
      ${c.technician ? ` · ${esc(c.technician)}` : ""} · <a data-test="commissioning-link" target="_blank"
      href="/dashboard/commissioning/${encodeURIComponent(id)}${LANG === "en" ? "?lang=en" : ""}">${esc(t("commissioning_open"))}</a>`
      : `<p class="muted">${esc(t("commissioning_none"))}</p>`;
    // What the user's role allows: operator acknowledges alarms, admin sends commands.
    if (rank === null) rank = await roleRank();
    if (!actionsDrawn) {
      actionsDrawn = true;
      const acts = $("[data-test=actions]", root);
      acts.innerHTML = rank >= ROLES.admin ? ["ping", "get-config"].map((cmd) =>
        `<button type="button" data-cmd="${cmd}">${esc(t(`action_${cmd.replace("-", "_")}`))}</button>`).join(" ") + `<div data-test="action-result" class="result"></div>`
        : rank < ROLES.operator ? `<p class="muted" data-test="view-only">${esc(t("no_actions"))}</p>` : "";
      acts.querySelectorAll("button[data-cmd]").forEach((b) => b.addEventListener("click", async () => {
        const out = $("[data-test=action-result]", root);
        try {
          const t0 = performance.now();
          const r = await api(`/api/v1/nodes/${encodeURIComponent(id)}/commands`, "POST", { cmd: b.dataset.cmd });
          out.innerHTML = commandResult(b.dataset.cmd, r.result, performance.now() - t0); // readable.js
        } catch (e) {
          out.textContent = t("action_failed", { message: e.message });
        }
      }));
    }
    // Admin: power-cycle a camera through its alarm-board relay (the node's power-cycle command).
    if (rank >= ROLES.admin) for (const d of devicesShown) {
      if (d.kind !== "camera" || !(d.detail && d.detail.relay)) continue;
      const tr = root.querySelector(`[data-test=devices] tr[data-device="${CSS.escape(d.device_id)}"]`);
      if (!tr || tr.querySelector("button[data-power-cycle]")) continue;
      tr.lastElementChild.insertAdjacentHTML("beforeend", ` <button type="button" data-power-cycle="${esc(d.device_id)}">${esc(t("action_power_cycle"))}</button>`);
      tr.querySelector("button[data-power-cycle]").addEventListener("click", async (ev) => {
        const b = ev.currentTarget;
        const out = $("[data-test=action-result]", root);
        b.disabled = true;
        try {
          const r = await api(`/api/v1/nodes/${encodeURIComponent(id)}/commands`, "POST", { cmd: "power-cycle", args: { camera: b.dataset.powerCycle } });
          out.textContent = t("power_cycle_queued", { camera: b.dataset.powerCycle, relay: r.result.relay });
        } catch (e) {
          out.textContent = t("action_failed", { message: e.message });
        } finally {
          b.disabled = false;
        }
      });
    }
    const alarmsBox = $("[data-test=open-alarms]", root);
    if (rank < ROLES.operator) { alarmsBox.innerHTML = ""; return; }
    const open = (await api(`/api/v1/alarms?node=${encodeURIComponent(id)}&state=open&limit=20`)).alarms;
    // The pictures taken on each alarm by the cameras of its zone (GET .../snapshots), fetched
    // before the box is replaced, so a refresh never shows an alarm without its pictures.
    const shots = await Promise.all(open.map((a) => alarmShots(a.id)));
    alarmsBox.innerHTML = `<h2>${esc(t("open_alarms_title"))}</h2>` + (open.length ? `<ul class="events">${open.map((a, i) => `<li data-alarm="${a.id}">
      ${priorityPill("alarm")} ${esc(eventKindName(a.kind))} <span class="muted">${esc(fmtTime(a.ts))}</span>
      <button type="button" data-ack="${a.id}">${esc(t("action_ack"))}</button>${shots[i].length ? `<div class="snaps" data-test="alarm-snapshots">${shots[i].map((s) =>
        `<figure><a href="${esc(s.url)}" target="_blank"><img data-test="alarm-snapshot" data-camera="${esc(s.camera)}"
          src="${esc(s.url)}" width="${s.width}" height="${s.height}" alt="${esc(t("snapshot_of", { camera: s.camera }))}"></a>
          <figcaption>${esc(s.camera)} · ${esc(fmtTime(s.taken_ts))}</figcaption></figure>`).join("")}</div>` : ""}</li>`).join("")}</ul>`
      : `<p class="muted">${esc(t("no_open_alarms"))}</p>`);
    alarmsBox.querySelectorAll("button[data-ack]").forEach((b) => b.addEventListener("click", async () => {
      b.disabled = true;
      try {
        await api(`/api/v1/alarms/${b.dataset.ack}/ack`, "POST", { note: "" });
      } catch (e) {
        console.warn("ack", e);
      }
      scheduleRefresh();
    }));
  }

  function render(n) {
    crumbs(ancestors.ancestors.concat([{ code: n.village, name: n.village_name || n.village }]), { name: n.node_id });
    const st = $("[data-test=node-state]", root);
    st.dataset.state = n.state;
    st.innerHTML = `<h2>${esc(t("node_title", { id: n.node_id }))}</h2>
      <div class="big">${pill(n.state, t(`state_${n.state}`))}</div>
      <div class="sub">${esc(t("col_since"))}: ${esc(fmtTime(n.state_since))} · ${esc(reasonText(n.state_reason))}</div>
      <div class="sub">${esc(t("col_last_seen"))}: ${esc(fmtTime(n.last_seen))}</div>
      ${n.clock_off_s == null ? "" : `<div class="sub clock-off" data-test="clock-off">${esc(t("node_clock_off", { s: `${n.clock_off_s > 0 ? "+" : ""}${fmtInt(Math.round(n.clock_off_s))}` }))}</div>`}
      <div class="sub"><a data-test="meeting-link" href="${meetingHref(n.node_id)}">${esc(t("meeting_open"))}</a></div>`;
    const h = n.last_health;
    $("[data-test=health]", root).innerHTML = h ? `<dl class="kv">
      <dt>${esc(t("h_cpu"))}</dt><dd>${h.cpu_pct.toFixed(1)}%</dd>
      <dt>${esc(t("h_mem"))}</dt><dd>${h.mem_used_pct.toFixed(1)}%</dd>
      <dt>${esc(t("h_disk"))}</dt><dd>${h.disk_used_pct.toFixed(1)}%</dd>
      <dt>${esc(t("h_temp"))}</dt><dd>${h.temp_c == null ? "—" : `${h.temp_c.toFixed(1)} °C`}</dd>
      <dt>${esc(t("h_uptime"))}</dt><dd>${esc(fmtDuration(h.uptime_s))}</dd>
      <dt>${esc(t("h_version"))}</dt><dd>${esc(h.sw_version)}</dd>
      <dt>${esc(t("h_outbox"))}</dt><dd>${fmtInt(h.outbox_depth)}</dd>
      <dt>${esc(t("h_reported"))}</dt><dd>${esc(fmtTime(h.ts))}</dd></dl>` : `<p class="muted">${esc(t("no_health"))}</p>`;
    const hs = n.health.slice().reverse();
    hchart.setOption({
      animation: false, legend: { top: 0, textStyle: { color: "#8fa3bb" } },
      grid: { left: 36, right: 8, top: 28, bottom: 20 },
      xAxis: { type: "category", data: hs.map((r) => fmtTime(r.ts).slice(-8)), axisLabel: { color: "#8fa3bb" } },
      yAxis: { type: "value", max: 100, axisLabel: { color: "#8fa3bb" }, splitLine: { lineStyle: { color: "#26405f" } } },
      series: [
        { name: t("h_cpu"), type: "line", data: hs.map((r) => r.cpu_pct) },
        { name: t("h_mem"), type: "line", data: hs.map((r) => r.mem_used_pct) },
        { name: t("h_temp"), type: "line", data: hs.map((r) => r.temp_c ?? null) },
      ],
    });
    // Timeline: the recent intervals, oldest left, the current one up to now.
    const now = Date.now() / 1000;
    const iv = n.state_history.slice().reverse();
    const start = iv.length ? iv[0].start : now;
    const span = Math.max(1, now - start);
    $("[data-test=timeline]", root).innerHTML = `<div class="timeline">${iv.map((i) => {
      const end = i.end ?? now;
      return `<div class="${i.state}" style="width:${(((end - i.start) / span) * 100).toFixed(3)}%"
        title="${esc(t(`state_${i.state}`))} ${esc(fmtTime(i.start))} – ${esc(i.end ? fmtTime(i.end) : "")} ${esc(reasonText(i.reason))}"></div>`;
    }).join("")}</div><div class="muted">${esc(fmtTime(start))} – ${esc(fmtTime(now))}</div>`;
    const devs = n.devices.filter((d) => !d.removed);
    devicesShown = devs;
    $("[data-test=devices]", root).innerHTML = devs.length ? `<table><thead><tr><th>${esc(t("col_device"))}</th><th>${esc(t("col_kind"))}</th>
      <th>${esc(t("col_state"))}</th><th>${esc(t("col_time"))}</th></tr></thead><tbody>${devs.map((d) => `<tr data-device="${esc(d.device_id)}">
      <td>${esc(d.name || d.device_id)}</td><td>${esc(kindName(d.kind))}</td><td>${pill(d.state === "up" ? "online" : d.state === "unknown" ? "never" : "offline", d.suppressed ? t("health_node_offline") : t(`device_${d.state}`))}</td><td>${esc(fmtTime(d.ts))}</td></tr>`).join("")}</tbody></table>`
      : `<p class="muted">${esc(t("no_devices"))}</p>`;
    $("[data-test=node-events]", root).innerHTML = eventsList(n.events);
    markReady();
  }

  return {
    key: `n:${id}`,
    async refresh() {
      const n = await api(`/api/v1/nodes/${encodeURIComponent(id)}`);
      if (ancestors === null) ancestors = await api(coveragePath(n.village));
      render(n);
      await renderExtras();
    },
    dispose() {},
  };
}

// -- alerts banner -----------------------------------------------------------------------------

let alertsTimer = null;
async function refreshAlerts() {
  if (alertsTimer !== null) { clearTimeout(alertsTimer); alertsTimer = null; }
  const box = $("[data-test=alerts]");
  try {
    const r = await api("/api/v1/alerts");
    const firing = r.firing;
    box.dataset.count = String(firing.length);
    box.hidden = firing.length === 0;
    const shown = firing.slice(0, ALERTS_SHOWN);
    box.innerHTML = firing.length ? `<strong>${esc(t("alerts_firing", { n: fmtInt(firing.length) }))}</strong>
      <ul>${shown.map((a) => `<li data-alert="${esc(`${a.rule}:${a.key}`)}" class="${esc(a.severity)}">
        ${pill(a.severity === "critical" ? "alarm" : "device", t(`severity_${a.severity}`))}
        ${a.labels.node ? `<a href="${nodeHref(a.labels.node)}">${esc(LANG === "en" ? a.summary.en : a.summary.zh)}</a>`
          : a.labels.code ? `<a href="${unitHref(a.labels.code)}">${esc(LANG === "en" ? a.summary.en : a.summary.zh)}</a>`
          : esc(LANG === "en" ? a.summary.en : a.summary.zh)}
        <span class="muted">${esc(t("alerts_since", { time: fmtTime(a.since) }))}</span></li>`).join("")}</ul>
      ${firing.length > shown.length ? `<span class="muted">${esc(t("alerts_more", { n: fmtInt(firing.length - shown.length) }))}</span>` : ""}` : "";
  } catch (e) {
    console.warn("alerts", e);
  } finally {
    alertsTimer = setTimeout(refreshAlerts, ALERTS_POLL_MS);
  }
}

// -- routing, refresh, live -------------------------------------------------------------------------

let refreshing = false, again = false, timer = null, lastRefresh = 0;

async function refresh() {
  timer = null;
  if (!view) return;
  if (refreshing) { again = true; return; }
  refreshing = true;
  lastRefresh = performance.now();
  const v = view;
  try {
    fresh.loaded(await v.refresh());
    v.shown = true;
    shilian.refreshes += 1;
    document.body.dataset.refreshes = String(shilian.refreshes);
  } catch (e) {
    // A view already on screen keeps its figures (greyed, under the stale banner); one that
    // never loaded says why.
    fresh.failed(e.message);
    if (v === view && !v.shown) $("#view").innerHTML = `<p class="error" data-test="error">${esc(t("error_load", { message: e.message }))}</p>`;
  } finally {
    refreshing = false;
    if (again) { again = false; scheduleRefresh(); }
  }
}

function scheduleRefresh() {
  if (timer !== null) return;
  const wait = Math.max(REFRESH_FIRST_MS, lastRefresh + REFRESH_MIN_MS - performance.now());
  timer = setTimeout(refresh, wait);
}

function route() {
  const h = decodeURIComponent(location.hash.replace(/^#\/?/, ""));
  let next;
  if (h.startsWith("n/")) next = ["n", h.slice(2)];
  else if (h === "alarms" || h.startsWith("alarms?")) next = ["a", h.slice(7)];
  else if (h.startsWith("u/") && /^\d{2,12}$/.test(h.slice(2))) next = ["u", h.slice(2)];
  // -- admin pages (admin.js) --
  else if (h === "admin" || h.startsWith("admin/")) next = ["admin", h.slice(6)];
  // -- end admin pages --
  else next = ["u", BOOT.scope];
  if (view) view.dispose();
  Object.values(shilian.charts).forEach((c) => c.dispose());
  shilian.charts = {};
  view = next[0] === "n" ? nodeView(next[1]) : next[0] === "a" ? window.shilianAlarms.view(next[1])
    : next[0] === "admin" ? window.shilianAdmin.view(next[1]) : unitView(next[1]);
  if (timer !== null) { clearTimeout(timer); timer = null; }
  refresh();
}

function connectLive() {
  const src = new EventSource("/api/v1/live");
  src.addEventListener("hello", (m) => {
    fresh.opened(JSON.parse(m.data));
    scheduleRefresh(); // anything missed while disconnected
    refreshAlerts();
  });
  src.addEventListener("link", (m) => {
    fresh.heard();
    const was = fresh.state.link;
    const l = JSON.parse(m.data);
    fresh.link(l);
    if (was && !was.broker_connected && l.broker_connected) scheduleRefresh(); // back: re-read
  });
  src.addEventListener("alert", () => { fresh.heard(); refreshAlerts(); });
  src.addEventListener("admin", (m) => { fresh.heard(); window.shilianAdmin.changed(JSON.parse(m.data)); });
  for (const kind of ["node", "coverage", "event", "devices", "resync"]) {
    src.addEventListener(kind, () => { fresh.heard(); scheduleRefresh(); });
  }
  src.addEventListener("event", (m) => window.shilianAlarms.onEvent(JSON.parse(m.data)));
  src.onerror = () => fresh.lost();
  // A stream silent past its keepalives is dead: drop it and open a new one.
  fresh.onDead(() => { src.close(); connectLive(); });
}

// -- search box: type to search; Up/Down move the selection, Enter opens it, Escape closes ----------

function setupSearch() {
  const input = $("[data-test=search]");
  const list = $("[data-test=search-results]");
  input.placeholder = t("search_placeholder");
  // A combobox (WAI-ARIA): the selected hit is aria-selected and named by aria-activedescendant.
  input.setAttribute("role", "combobox");
  input.setAttribute("aria-expanded", "false");
  input.setAttribute("aria-controls", "search-results");
  list.id = "search-results";
  list.setAttribute("role", "listbox");
  let seq = 0;
  let selected = -1; // index of the selected hit, -1: none (Enter opens the first)
  // The search answering the input as it is now: Enter waits for it, so it never opens a hit of
  // an earlier query whose list is still in the DOM.
  let pending = Promise.resolve();
  const hits = () => Array.from(list.querySelectorAll("li[data-code], li[data-node]"));
  const show = (on) => {
    list.hidden = !on;
    input.setAttribute("aria-expanded", on ? "true" : "false");
  };
  const select = (i) => {
    const all = hits();
    selected = all.length && !Number.isNaN(i) ? (i + all.length) % all.length : -1; // NaN: none
    all.forEach((li, k) => li.setAttribute("aria-selected", k === selected ? "true" : "false"));
    const li = all[selected];
    if (li) { input.setAttribute("aria-activedescendant", li.id); li.scrollIntoView({ block: "nearest" }); }
    else input.removeAttribute("aria-activedescendant");
  };
  const open = (li) => {
    show(false);
    input.value = "";
    location.hash = li.dataset.node ? nodeHref(li.dataset.node) : unitHref(li.dataset.code);
  };
  const run = async (q, mine) => {
    const r = await api(`/api/v1/dashboard/search?q=${encodeURIComponent(q)}`);
    if (mine !== seq) return;
    // A node id typed: its node first (with its state), then the units.
    const nodes = (r.nodes || []).map((n, i) => `<li id="search-node-${i}" role="option" aria-selected="false" data-node="${esc(n.node_id)}">${esc(n.node_id)} ${pill(n.state, t(`state_${n.state}`))}<small>${esc(n.village_name || "")}</small></li>`).join("");
    list.innerHTML = nodes || r.results.length ? nodes + r.results.map((u, i) => `<li id="search-hit-${i}" role="option" aria-selected="false" data-code="${u.code}">${esc(u.name)}${(u.former || []).length ? ` <small data-test="former">${esc(t("search_former", { name: u.former.join("、") }))}</small>` : ""}<small>${esc(u.path)} · ${u.code}</small></li>`).join("")
      : `<li class="muted">${esc(t("search_none"))}</li>`;
    selected = -1;
    show(true);
    hits().forEach((li) => li.addEventListener("click", () => open(li)));
  };
  input.addEventListener("input", () => {
    const q = input.value.trim();
    const mine = ++seq;
    list.innerHTML = "";
    selected = -1;
    show(false);
    if (!q) { pending = Promise.resolve(); return; }
    pending = run(q, mine).catch(() => {});  // a failed search leaves the list empty
  });
  input.addEventListener("keydown", async (e) => {
    if (e.key === "Escape") { show(false); select(NaN); return; }
    if (e.key === "ArrowDown" || e.key === "ArrowUp") {
      e.preventDefault(); // the caret stays where it is
      const mine = seq;
      await pending;
      if (mine !== seq || !hits().length) return;
      show(true);
      select(selected < 0 ? (e.key === "ArrowDown" ? 0 : -1) : selected + (e.key === "ArrowDown" ? 1 : -1));
      return;
    }
    if (e.key !== "Enter") return;
    const mine = seq;
    await pending;
    if (mine !== seq) return;
    const hit = hits()[Math.max(0, selected)];
    if (hit) open(hit);
  });
}

// The language switch: this page in the other language (the address's range and view kept).
function updateLangLink() {
  const lang = $("[data-test=lang]");
  const p = new URLSearchParams(location.search);
  if (LANG === "en") p.delete("lang"); else p.set("lang", "en");
  const s = p.toString();
  lang.href = `${location.pathname}${s ? `?${s}` : ""}${location.hash}`;
}

function setupHeader() {
  document.title = t("app_title");
  const brand = $("[data-test=brand]");
  brand.textContent = `${BOOT.scope_name} · ${t("app_title")}`;
  $("[data-test=lang]").textContent = t("lang_switch");
  updateLangLink();
  window.addEventListener("hashchange", updateLangLink);
}

setupHeader();
setupSearch();
window.shilianAlarms.start();
window.shilianAdmin.start(); // admin pages (admin.js): the header link, for admins only
window.addEventListener("hashchange", route);
route();
connectLive();
