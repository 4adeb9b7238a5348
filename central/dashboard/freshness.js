// How fresh the figures on screen are, on every view and on the wall screen: the header's
// badge ("● 实时" only while everything below holds) and last update time, and a red banner with
// the figures greyed when central has lost its MQTT broker (its figures stop changing) or the
// page has lost central (the live stream is closed or silent, or reads fail).
// Loaded before app.js; app.js reports to window.shilianFreshness what it sees.
"use strict";

window.shilianFreshness = (function () {
  // The live stream sends a keepalive (central's link status) every keepalive_s seconds
  // (central.dashboard.KEEPALIVE_S, told in "hello"); missing this many in a row means the
  // stream is dead even if the browser has not noticed (a cut network, a hung proxy).
  const MISSED_KEEPALIVES = 2.5;
  const CHECK_MS = 1000;
  // A page just opened has no stream yet: it is not "lost" unless none opens within this.
  const FIRST_OPEN_MS = 5000;
  const openedAt = Date.now();
  const state = {
    stream: false, // the live stream is open
    everOpened: false, // it has been open at least once
    heardAt: 0, // browser time (ms) of the stream's last message
    keepaliveMs: 15000,
    link: null, // central's broker link: { broker_connected, since, last_traffic }
    loadError: null, // message of the last failed read, null after a good one
    loadedAt: null, // central's time of the last good read (s)
    onDead: null, // called when the stream has been silent too long
  };

  function fmt(ts) { return ts == null ? "—" : fmtTime(ts); } // app.js's formatter (global)

  function render() {
    const badge = document.querySelector("[data-test=live]");
    const banner = document.querySelector("[data-test=stale]");
    const updated = document.querySelector("[data-test=updated]");
    if (!badge || !banner || typeof t !== "function") return;
    const waiting = !state.everOpened && Date.now() - openedAt < FIRST_OPEN_MS;
    const lostCentral = (!state.stream && !waiting) || state.loadError !== null;
    const lostBroker = !lostCentral && state.link !== null && !state.link.broker_connected;
    const live = state.stream && !lostCentral && !lostBroker && state.link !== null;
    badge.className = `live ${live ? "on" : "off"}`;
    badge.textContent = waiting && !live ? "" : t(live ? "live_on" : lostBroker ? "live_stale" : "live_off");
    updated.textContent = state.loadedAt == null ? "" : t("updated_at", { time: fmt(state.loadedAt) });
    const reason = lostCentral ? "central" : lostBroker ? "broker" : "";
    document.body.classList.toggle("stale", reason !== "");
    banner.hidden = reason === "";
    banner.dataset.reason = reason;
    if (reason === "central") {
      banner.textContent = t("stale_central", { time: fmt(state.loadedAt) });
    } else if (reason === "broker") {
      banner.textContent = t("stale_broker", {
        since: fmt(state.link.since), traffic: fmt(state.link.last_traffic),
      });
    } else {
      banner.textContent = "";
    }
  }

  setInterval(() => {
    if (state.stream && Date.now() - state.heardAt > MISSED_KEEPALIVES * state.keepaliveMs) {
      state.stream = false;
      render();
      if (state.onDead) state.onDead();
    } else if (!state.everOpened) {
      render(); // the first stream's grace running out
    }
  }, CHECK_MS);

  return {
    // The live stream said hello: open, with central's keepalive period and link status.
    opened(hello) {
      state.stream = true;
      state.everOpened = true;
      state.heardAt = Date.now();
      if (hello && hello.keepalive_s) state.keepaliveMs = hello.keepalive_s * 1000;
      if (hello && hello.link) state.link = hello.link;
      render();
    },
    // Any message on the stream.
    heard() { state.heardAt = Date.now(); },
    // The stream failed (the browser reconnects by itself).
    lost() { state.stream = false; render(); },
    // Central's broker link status: a "link" message (in order on the stream: always taken).
    link(l) { if (l) { state.link = l; render(); } },
    // ... or a view's answer ("link" in the overview), which may have been computed before the
    // stream's latest change and arrive after it: a status older than the one shown is ignored.
    linkRead(l) {
      const cur = state.link;
      if (!l || (cur && cur.since != null && (l.since == null || l.since < cur.since))) return;
      state.link = l;
      render();
    },
    // A view's read succeeded (central's time of the answer) or failed (its message).
    loaded(time) { state.loadError = null; state.loadedAt = time ?? Date.now() / 1000; render(); },
    failed(message) { state.loadError = message; render(); },
    onDead(fn) { state.onDead = fn; },
    state,
  };
})();
