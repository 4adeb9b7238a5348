// The broadcast page (docs/meetings.md "1:N"): an operator addresses many villages at once.
// One peer connection per village, each sending this page's camera and microphone; signalling
// goes through central (POST /api/v1/meetings with mode "broadcast", DELETE to end), so every
// village is scope-checked, audited and refused on its own (offline, busy) without failing the
// others. The villages send no media back; each reports what it decoded, shown per row from
// its meeting record. window.__broadcast exposes the state of every village's leg for tests and
// bench/meeting.py.
// The states and their strings (every key spelled out: the catalogue test reads them).
const BROADCAST_TEXT = {
  idle: "broadcast_state_idle",
  starting: "broadcast_state_starting",
  live: "broadcast_state_live",
  ended: "broadcast_state_ended",
};
const LEG_TEXT = {
  pending: "leg_state_pending",
  connecting: "leg_state_connecting",
  connected: "leg_state_connected",
  failed: "leg_state_failed",
  busy: "leg_state_busy",
  offline: "leg_state_offline",
  ended: "leg_state_ended",
};
// Why central ended a leg the village side ended (a meeting record's end_reason).
const END_TEXT = {
  hangup_remote: "leg_end_hangup_remote",
  central_restarted: "leg_end_central_restart",
  central_stopped: "leg_end_central_stopped",
};

(function () {
  "use strict";
  var boot = BOOT;
  var CODE = boot.code;
  var MAX = boot.max;
  // How long a leg waits for its own ICE candidates before sending the offer anyway (ms).
  var GATHER_MS = 3000;
  // How often each leg's sent frames and bytes are read from getStats (ms).
  var STATS_MS = 2000;
  // Every this many samples, each leg's record is read: a village that hung up (its agent
  // stopped) shows as ended at once, not when its peer connection times out (~30 s).
  var RECORD_EVERY = 2;
  // What the page sends to every village: one encoder per village, so a modest picture
  // (docs/meetings.md: uplink and browser cost grow with the number of villages).
  var VIDEO = { width: { ideal: 640 }, height: { ideal: 360 }, frameRate: { ideal: 15 } };

  var state = window.__broadcast = { state: "idle", legs: {}, nodes: [], startedAt: null, error: null };
  var stream = null;
  var pcs = {}; // node -> RTCPeerConnection of the current broadcast
  var timer = null;

  function setState(s, why) {
    state.state = s;
    var el = $("[data-test=broadcast-state]");
    el.dataset.state = s;
    el.textContent = s === "failed" ? t("broadcast_state_failed", { why: why || "" }) : t(BROADCAST_TEXT[s]);
    var busy = s === "starting" || s === "live";
    $("[data-test=broadcast-start]").disabled = busy;
    $("[data-test=broadcast-end]").disabled = !busy;
    document.querySelectorAll("[data-test=broadcast-pick]").forEach(function (b) { b.disabled = busy; });
    $("[data-test=broadcast-all]").disabled = busy;
  }

  function setLeg(node, s, reason) {
    var leg = state.legs[node] || (state.legs[node] = { session: null, framesSent: 0, bytesSent: 0, received: 0 });
    leg.state = s;
    leg.reason = reason || "";
    if (s === "connected" && leg.connectedMs == null) leg.connectedMs = performance.now() - state.startedAt;
    var cell = document.querySelector('[data-test=leg-state][data-node="' + node + '"]');
    if (cell) {
      cell.dataset.state = s;
      cell.className = "leg-" + s;
      cell.textContent = t(LEG_TEXT[s]) + (reason ? " · " + reason : "");
    }
  }

  function gathered(p) {
    if (p.iceGatheringState === "complete") return Promise.resolve();
    return new Promise(function (resolve) {
      p.addEventListener("icegatheringstatechange", function () {
        if (p.iceGatheringState === "complete") resolve();
      });
      setTimeout(resolve, GATHER_MS);
    });
  }

  function legFor(node) {
    // Host candidates only, or the county's TURN server when central has one.
    var ice = boot.ice || {};
    var pc = new RTCPeerConnection({ iceServers: ice.iceServers || [], iceTransportPolicy: ice.iceTransportPolicy || "all" });
    pcs[node] = pc;
    stream.getTracks().forEach(function (tr) { pc.addTransceiver(tr, { direction: "sendonly", streams: [stream] }); });
    setLeg(node, "connecting");
    pc.onconnectionstatechange = function () {
      if (pcs[node] !== pc) return;
      if (pc.connectionState === "connected") setLeg(node, "connected");
      else if (pc.connectionState === "failed") endLeg(node, "failed", "ICE");
    };
    return pc.createOffer().then(function (o) { return pc.setLocalDescription(o); })
      .then(function () { return gathered(pc); })
      .then(function () {
        return api("/api/v1/meetings", "POST", { node_id: node, sdp: pc.localDescription.sdp, mode: "broadcast" });
      })
      .then(function (ans) {
        if (pcs[node] !== pc) { api("/api/v1/meetings/" + ans.session, "DELETE").catch(function () {}); return; }
        state.legs[node].session = ans.session;
        return pc.setRemoteDescription({ type: "answer", sdp: ans.sdp });
      })
      .catch(function (e) {
        if (pcs[node] !== pc) return;
        var s = e.code === "busy" ? "busy" : e.code === "node_offline" ? "offline" : "failed";
        endLeg(node, s, e.message);
      });
  }

  // One village's leg ends (refused, failed, or the broadcast ends): free it, tell central.
  function endLeg(node, s, reason) {
    var pc = pcs[node];
    delete pcs[node];
    var leg = state.legs[node];
    var session = leg ? leg.session : null;
    if (leg) leg.session = null;
    setLeg(node, s, reason);
    var bye = session ? api("/api/v1/meetings/" + session, "DELETE").catch(function () {}) : Promise.resolve();
    return bye.then(function () { if (pc) pc.close(); });
  }

  function start() {
    var nodes = picked();
    if (!nodes.length) return;
    if (!window.RTCPeerConnection || !navigator.mediaDevices) { setState("failed", t("meeting_no_webrtc")); return; }
    state.legs = {};
    state.error = null;
    state.startedAt = performance.now();
    nodes.forEach(function (n) { setLeg(n, "pending"); });
    setState("starting");
    var md = navigator.mediaDevices;
    md.getUserMedia({ video: VIDEO, audio: true })
      .catch(function () { return md.getUserMedia({ video: VIDEO }); })
      .then(function (s) {
        if (state.state !== "starting") { s.getTracks().forEach(function (tr) { tr.stop(); }); return; }
        stream = s;
        $("[data-test=broadcast-preview]").srcObject = s;
        setState("live");
        timer = setInterval(sample, STATS_MS);
        return Promise.all(nodes.map(legFor));
      })
      .catch(function (e) {
        state.error = e.message;
        nodes.forEach(function (n) { setLeg(n, "failed", e.message); });
        setState("failed", t("broadcast_no_media", { why: e.message }));
      });
  }

  // End for all: every village's session is hung up through central, then media stops.
  function end() {
    if (timer) { clearInterval(timer); timer = null; }
    var all = Object.keys(pcs).map(function (node) { return endLeg(node, "ended"); });
    Object.keys(state.legs).forEach(function (node) {
      if (state.legs[node].state === "pending") setLeg(node, "ended"); // ended before the camera opened
    });
    setState("ended");
    return Promise.all(all).then(function () {
      if (stream) { stream.getTracks().forEach(function (tr) { tr.stop(); }); stream = null; }
      $("[data-test=broadcast-preview]").srcObject = null;
    });
  }

  var ticks = 0;

  function sample() {
    ticks += 1;
    Object.keys(pcs).forEach(function (node) {
      var leg = state.legs[node];
      if (ticks % RECORD_EVERY === 0 && leg && leg.session) {
        var session = leg.session;
        api("/api/v1/meetings/" + session).then(function (rec) {
          var now = state.legs[node];
          if (!now || now.session !== session) return;
          // what the village reports it decoded (its node's "received" messages)
          if (rec.stats && rec.stats.frames_decoded != null) {
            now.received = rec.stats.frames_decoded;
            var cell = document.querySelector('[data-test=leg-received][data-node="' + node + '"]');
            if (cell) cell.textContent = String(now.received);
          }
          if (rec.state !== "ended") return;
          now.session = null; // ended at central already: nothing to hang up
          endLeg(node, "ended", END_TEXT[rec.end_reason] ? t(END_TEXT[rec.end_reason]) : rec.end_reason);
        }).catch(function () {});
      }
    });
    Object.keys(pcs).forEach(function (node) {
      var pc = pcs[node];
      pc.getStats().then(function (report) {
        var frames = 0, bytes = 0;
        report.forEach(function (r) {
          if (r.type === "outbound-rtp") {
            bytes += r.bytesSent || 0;
            if (r.kind === "video") frames += r.framesEncoded || 0;
          }
        });
        var leg = state.legs[node];
        if (!leg || pcs[node] !== pc) return;
        leg.framesSent = frames;
        leg.bytesSent = bytes;
        var cell = document.querySelector('[data-test=leg-sent][data-node="' + node + '"]');
        if (cell) cell.textContent = String(frames);
      });
    });
  }

  function picked() {
    var out = [];
    document.querySelectorAll("[data-test=broadcast-pick]").forEach(function (b) { if (b.checked) out.push(b.value); });
    return out.slice(0, MAX);
  }

  function count() {
    $("[data-test=broadcast-count]").textContent = t("broadcast_count", { n: picked().length, total: state.nodes.length, max: MAX });
  }

  function villages() {
    var param = { 6: "county", 9: "township", 12: "village" }[CODE.length];
    var url = "/api/v1/nodes?limit=" + MAX + (param ? "&" + param + "=" + CODE : "");
    return api(url).then(function (r) {
      state.nodes = r.nodes.map(function (n) { return n.node_id; });
      var box = $("[data-test=broadcast-villages]");
      if (!r.nodes.length) { box.innerHTML = '<p class="muted">' + esc(t("broadcast_no_villages")) + "</p>"; return; }
      box.innerHTML = "<table><thead><tr><th></th><th>" + esc(t("broadcast_col_village")) + "</th><th>" +
        esc(t("broadcast_col_node")) + "</th><th>" + esc(t("broadcast_col_state")) + "</th><th>" +
        esc(t("broadcast_col_sent")) + "</th><th>" + esc(t("broadcast_col_received")) + "</th></tr></thead><tbody>" +
        r.nodes.map(function (n) {
          var id = esc(n.node_id);
          return '<tr data-test="broadcast-row" data-node="' + id + '"><td><input type="checkbox" data-test="broadcast-pick" value="' +
            id + '" checked></td><td>' + esc(n.village_name || n.village) + "</td><td>" + id +
            '</td><td data-test="leg-state" data-node="' + id + '">' + esc(t(n.state === "online" ? "state_online" : "state_offline")) +
            '</td><td data-test="leg-sent" data-node="' + id + '"></td><td data-test="leg-received" data-node="' + id +
            '"></td></tr>';
        }).join("") + "</tbody></table>";
      document.querySelectorAll("[data-test=broadcast-pick]").forEach(function (b) { b.addEventListener("change", count); });
      $("[data-test=broadcast-all]").checked = true;
      count();
    }).catch(function (e) { state.error = e.message; });
  }

  subpageHead(t("broadcast_title"), CODE ? "#/u/" + encodeURIComponent(CODE) : "");
  $("[data-test=broadcast-title]").textContent = t("broadcast_title");
  $("[data-test=broadcast-start]").textContent = t("broadcast_start");
  $("[data-test=broadcast-end]").textContent = t("broadcast_end");
  $("[data-test=broadcast-hint]").textContent = t("broadcast_hint");
  $("[data-test=villages-title]").textContent = t("broadcast_villages");
  $("[data-test=all-label]").textContent = t("broadcast_all");
  $("[data-test=broadcast-start]").addEventListener("click", start);
  $("[data-test=broadcast-end]").addEventListener("click", function () { end(); });
  $("[data-test=broadcast-all]").addEventListener("change", function (ev) {
    document.querySelectorAll("[data-test=broadcast-pick]").forEach(function (b) { b.checked = ev.target.checked; });
    count();
  });
  window.addEventListener("pagehide", function () { if (Object.keys(pcs).length) end(); });
  setState("idle");
  state.ready = villages();
})();
