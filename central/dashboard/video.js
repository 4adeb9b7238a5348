// Cameras, conference terminals and the information-system link on the unit view: the stricter
// figure (村级视联网完全接通率) beside node coverage, its ranking, 三网融合, the device counts, the
// "cameras not ok" table and the device list. Loaded before app.js; its functions run only when
// app.js calls them, and then use app.js's helpers (t, esc, api, chart, ...).
"use strict";

// Rows of the device tables drawn at once (the API pages; a township has a few hundred).
const VIDEO_ROWS = 500;
const VIDEO_STATES = ["up", "degraded", "down", "unknown"];
const VIDEO_NETWORKS = ["video_network", "public_video", "info_system"];
// Device state -> pill colour class of app.css.
const VIDEO_PILL = { up: "online", degraded: "device", down: "offline", unknown: "never" };

function healthName(h) { return BOOT.strings[`health_${h}`] ? t(`health_${h}`) : h; }
// A node's reason is "中文 / English": the reader's half.
function reasonHalf(r) {
  if (!r) return "";
  const parts = r.split(" / ");
  return parts.length === 2 ? parts[LANG === "en" ? 1 : 0] : r;
}

function videoView(code, hasRank) {
  const isVillage = code.length === 12;
  const lists = code.length >= 6; // county and below: a county has a few thousand cameras
  const deviceList = code.length >= 9;
  const sort = { key: "since", dir: 1 }; // longest not ok first
  let rank = null, failing = [], now = 0, root = null;
  const html = `
    <section class="card headline span6" data-test="full-headline">
      <h2>${esc(t("full_headline"))}</h2>
      <div class="big" data-test="full-ratio"></div>
      <div class="sub" data-test="full-of"></div>
      <div class="sub" data-test="networks"></div>
      <div class="sub" data-test="device-counts"></div>
    </section>
    ${hasRank ? `<section class="card span6"><h2>${esc(t("full_rank_title"))}</h2><div class="chart" data-test="full-rank"></div></section>` : ""}
    ${lists ? `<section class="card ${hasRank ? "span12" : "span6"}" ${BOOT.wall ? "hidden" : ""}>
      <h2>${esc(t("cameras_not_ok_title"))} <span class="muted" data-test="cameras-not-ok-count"></span></h2>
      <div class="table-wrap" data-test="cameras-not-ok"></div></section>` : ""}
    ${deviceList ? `<section class="card span12" ${BOOT.wall ? "hidden" : ""}><h2>${esc(t("device_list_title"))}</h2>
      <div class="table-wrap" data-test="device-list"></div></section>` : ""}`;

  function counts(c) {
    const line = (k, title) => `${title}${COLON}${VIDEO_STATES.filter((s) => c[k].state[s]).map((s) =>
      `<span data-kind="${k}" data-state="${s}" data-count="${c[k].state[s]}">${esc(t(`device_${s}`))} ${fmtInt(c[k].state[s])}</span>`).join(" / ") || "—"}`;
    return [line("cameras", t("kind_camera")), line("terminals", t("kind_conference_terminal"))].join(SEMI);
  }

  function render(coverage) {
    const u = coverage.unit, v = u.video;
    if (!v) return;
    const ratio = $("[data-test=full-ratio]", root);
    ratio.textContent = fmtPct(v.fully_connected_ratio);
    ratio.dataset.ratio = String(v.fully_connected_ratio);
    const of = $("[data-test=full-of]", root);
    of.textContent = t("full_of", { n: fmtInt(v.fully_connected), villages: fmtInt(u.villages) });
    of.dataset.fullyConnected = String(v.fully_connected);
    const nets = $("[data-test=networks]", root);
    nets.innerHTML = `${esc(t("networks_title"))}${COLON}` + (isVillage
      ? VIDEO_NETWORKS.map((n) => `<span data-network="${n}" data-on="${v.village[n] ? 1 : 0}">${pill(v.village[n] ? "online" : "offline", `${v.village[n] ? "✓" : "✗"} ${t(`network_${n}`)}`)}</span>`).join(" ")
        + ` <span data-network="terminal" data-on="${v.village.terminal ? 1 : 0}">${pill(v.village.terminal ? "online" : "offline", `${v.village.terminal ? "✓" : "✗"} ${t("kind_conference_terminal")}`)}</span>`
      : VIDEO_NETWORKS.map((n) => `<span data-network="${n}" data-count="${v.networks[n]}">${esc(t(`network_${n}`))} ${fmtInt(v.networks[n])}</span>`).join(" · "));
    $("[data-test=device-counts]", root).innerHTML = counts(v);
    if (rank) {
      const kids = coverage.children.filter((c) => c.video);
      const ranked = kids.slice().sort((a, b) => a.video.fully_connected_ratio - b.video.fully_connected_ratio || b.code.localeCompare(a.code));
      rank.setOption({
        animation: false,
        grid: { left: 8, right: chartPx(64, 4), top: 8, bottom: 8, containLabel: true },
        tooltip: { trigger: "item", formatter: (p) => `${esc(p.name)}: ${fmtPct(p.data.ratio)} (${fmtInt(p.data.n)} / ${fmtInt(p.data.villages)})` },
        xAxis: { type: "value", max: 100, axisLabel: { color: "#8fa3bb", formatter: "{value}%", fontSize: chartPx(12, 0.7) }, splitLine: { lineStyle: { color: "#26405f" } } },
        yAxis: { type: "category", data: ranked.map((c) => c.name), axisLabel: { color: "#e6edf5", fontSize: rankFont(rank, ranked.length), interval: 0 } },
        series: [{ type: "bar", data: ranked.map((c) => ({ value: +(c.video.fully_connected_ratio * 100).toFixed(2), code: c.code, ratio: c.video.fully_connected_ratio,
          n: c.video.fully_connected, villages: c.villages, itemStyle: { color: ratioColor(c.video.fully_connected_ratio) } })),
          label: { show: true, position: "right", color: "#e6edf5", fontSize: rankFont(rank, ranked.length), formatter: (p) => fmtPct(p.data.ratio) } }],
      });
    }
  }

  function deviceCells(d) {
    return `<td>${pill(VIDEO_PILL[d.state] || "never", healthName(d.health))}</td>
      <td>${esc(d.suppressed ? t("node_offline_reason") : reasonHalf(d.reason))}</td>
      <td data-since="${d.since ?? ""}">${esc(fmtTime(d.since))}</td><td>${esc(d.model || "—")}</td>`;
  }

  function renderFailing() {
    const box = $("[data-test=cameras-not-ok]", root);
    if (!box) return;
    const cols = [["name", "col_device"], ["village", "col_village"], ["health", "col_health"], ["since", "col_not_ok_for"]];
    const key = (d) => (sort.key === "since" ? d.since ?? d.ts : sort.key === "village" ? d.village_name || d.village : sort.key === "health" ? d.health : d.name || d.device_id);
    const rows = failing.slice().sort((a, b) => (key(a) < key(b) ? -1 : key(a) > key(b) ? 1 : 0) * sort.dir);
    box.dataset.rows = String(rows.length);
    box.innerHTML = rows.length ? `<table><thead><tr>${cols.map(([k, s]) => `<th data-sort="${k}" class="${sort.key === k ? `sorted ${sort.dir > 0 ? "asc" : "desc"}` : ""}">${esc(t(s))}</th>`).join("")}
      <th>${esc(t("col_reason"))}</th><th>${esc(t("col_model"))}</th></tr></thead><tbody>${rows.map((d) => `<tr data-device="${esc(`${d.node_id}/${d.device_id}`)}" data-since="${d.since ?? ""}">
      <td><a href="${nodeHref(d.node_id)}">${esc(d.name || d.device_id)}</a></td><td><a href="${unitHref(d.village)}">${esc(d.village_name || d.village)}</a></td>
      <td>${pill(VIDEO_PILL[d.state] || "never", healthName(d.health))}</td>
      <td class="num">${esc(fmtDuration(Math.max(0, now - (d.since ?? d.ts))))}</td>
      <td>${esc(reasonHalf(d.reason))}</td><td>${esc(d.model || "—")}</td></tr>`).join("")}</tbody></table>`
      : `<p class="muted">${esc(t("cameras_all_ok"))}</p>`;
    box.querySelectorAll("th[data-sort]").forEach((th) => th.addEventListener("click", () => {
      if (sort.key === th.dataset.sort) sort.dir = -sort.dir; else { sort.key = th.dataset.sort; sort.dir = 1; }
      renderFailing();
    }));
  }

  async function load() {
    if (!lists) return;
    const r = await api(`/api/v1/devices?code=${code}&kind=camera&status=failing&sort=since&limit=${VIDEO_ROWS}`);
    failing = r.devices;
    now = r.time;
    $("[data-test=cameras-not-ok-count]", root).textContent = `(${fmtInt(r.total)})`;
    renderFailing();
    if (!deviceList) return;
    const all = await api(`/api/v1/devices?code=${code}&limit=${VIDEO_ROWS}`);
    const box = $("[data-test=device-list]", root);
    box.dataset.rows = String(all.devices.length);
    box.innerHTML = all.devices.length ? `<table><thead><tr><th>${esc(t("col_device"))}</th><th>${esc(t("col_kind"))}</th><th>${esc(t("col_village"))}</th>
      <th>${esc(t("col_health"))}</th><th>${esc(t("col_reason"))}</th><th>${esc(t("col_since"))}</th><th>${esc(t("col_model"))}</th></tr></thead><tbody>${all.devices.map((d) =>
      `<tr data-device="${esc(`${d.node_id}/${d.device_id}`)}" data-state="${esc(d.state)}" data-health="${esc(d.health)}">
      <td><a href="${nodeHref(d.node_id)}">${esc(d.name || d.device_id)}</a></td><td>${esc(kindName(d.kind))}</td>
      <td>${esc(d.village_name || d.village)}</td>${deviceCells(d)}</tr>`).join("")}</tbody></table>`
      : `<p class="muted">${esc(t("no_devices"))}</p>`;
  }

  return {
    html,
    mount(node) {
      root = node;
      const r = $("[data-test=full-rank]", root);
      if (r) {
        rank = chart("full-rank", r);
        rank.on("click", (p) => { if (p.data && p.data.code) location.hash = unitHref(p.data.code); });
      }
    },
    render,
    load,
  };
}
