// The meeting page (docs/meetings.md): call a village node, show its camera, switch cameras,
// show call state and quality (getStats), hang up; the village's call history.
// Signalling goes through central (POST/DELETE /api/v1/meetings); media flows directly between
// this browser and the node. The offer is sent complete (ICE gathered first): no trickle.
// Opening the page (and choosing another camera before calling) asks central to prepare the
// village: the node opens that camera now, so the call's first picture comes at once.
// window.__meeting exposes the call's state for tests and bench/meeting.py.
// The call states and their strings (every key spelled out: the catalogue test reads them).
const STATE_TEXT = {
  idle: "meeting_state_idle",
  calling: "meeting_state_calling",
  connecting: "meeting_state_connecting",
  active: "meeting_state_active",
  ended: "meeting_state_ended",
};

(function () {
  "use strict";
  var boot = BOOT;
  var NODE = boot.node;
  var VILLAGE = NODE.slice(0, 12);
  // How long the page waits for its own ICE candidates before sending the offer anyway (ms):
  // host candidates come in a few ms; a TURN allocation in well under a second.
  var GATHER_MS = 3000;
  // Without ICE servers only host candidates come, all within a few ms of each other: the
  // offer goes this long after the last one (or on the end-of-candidates signal, whichever
  // first) instead of waiting for the browser to declare gathering complete.
  var HOST_SETTLE_MS = 20;
  // Quality refresh and how often the figures are stored with the meeting record (ms).
  var STATS_MS = 1000;
  var POST_STATS_EVERY = 5;

  var state = window.__meeting = {
    state: "idle", session: null, framesDecoded: 0, clickedAt: null, firstFrameMs: null,
    answeredMs: null, error: null, stats: {},
    // The last prepare: {camera, ok} once central answered (ok false: refused, e.g. offline).
    prepared: null,
    // Set-up stages, ms after the click: offer created, candidates gathered, answer back
    // (central and the node), ICE + DTLS connected, first picture (= firstFrameMs).
    stages: {},
  };
  function stage(name) { state.stages[name] = performance.now() - state.clickedAt; }
  var pc = null;
  var timer = null;
  var ticks = 0;
  var last = null; // previous getStats sample for the bit rate

  function setState(s, why) {
    state.state = s;
    var el = $("[data-test=meeting-state]");
    el.dataset.state = s;
    el.textContent = s === "failed" ? t("meeting_state_failed", { why: why || "" }) : t(STATE_TEXT[s]);
    var busy = s === "calling" || s === "connecting" || s === "active";
    $("[data-test=meeting-call]").disabled = busy;
    $("[data-test=meeting-hangup]").disabled = !busy;
  }

  // Resolves once the offer holds the page's candidates (see HOST_SETTLE_MS).
  function gathered(p) {
    if (p.iceGatheringState === "complete") return Promise.resolve();
    return new Promise(function (resolve) {
      var settle = null;
      var done = function () { if (settle) clearTimeout(settle); resolve(); };
      p.addEventListener("icegatheringstatechange", function () {
        if (p.iceGatheringState === "complete") done();
      });
      p.addEventListener("icecandidate", function (ev) {
        if (!ev.candidate) { done(); return; }
        if (settle) clearTimeout(settle);
        settle = setTimeout(done, HOST_SETTLE_MS);
      });
      setTimeout(done, GATHER_MS);
    });
  }

  function release() {
    if (timer) { clearInterval(timer); timer = null; }
    if (pc) { pc.close(); pc = null; }
    window.meetingAV.release();
    var v = $("[data-test=meeting-video]");
    if (v.srcObject) { v.srcObject.getTracks().forEach(function (tr) { tr.stop(); }); v.srcObject = null; }
    last = null;
  }

  function call() {
    if (!window.RTCPeerConnection) { setState("failed", t("meeting_no_webrtc")); return; }
    release();
    state.session = null; state.framesDecoded = 0; state.firstFrameMs = null; state.error = null;
    state.answeredMs = null; state.stages = {};
    state.clickedAt = performance.now();
    setState("calling");
    // Host candidates only, or the county's TURN server when central has one (meeting_av.js).
    pc = new RTCPeerConnection(window.meetingAV.config(boot));
    var mine = pc;
    var video = pc.addTransceiver("video", { direction: "recvonly" });
    pc.ontrack = function (ev) {
      if (window.meetingAV.track(ev)) return; // sound: meeting_av.js
      var v = $("[data-test=meeting-video]");
      v.srcObject = ev.streams && ev.streams[0] ? ev.streams[0] : new MediaStream([ev.track]);
      // The first picture shown, to the frame (getStats below only samples once a second).
      if (v.requestVideoFrameCallback) {
        v.requestVideoFrameCallback(function () {
          if (mine === pc && state.firstFrameMs == null) {
            state.firstFrameMs = performance.now() - state.clickedAt;
            state.stages.first_frame = state.firstFrameMs;
          }
        });
      }
    };
    pc.onconnectionstatechange = function () {
      if (mine !== pc) return;
      if (pc.connectionState === "connected") { stage("connected"); setState("active"); }
      else if (pc.connectionState === "failed") hangUp("failed");
    };
    var camera = $("[data-test=meeting-camera]").value || null;
    window.meetingAV.prepare(pc, video)
      .then(function () { return mine.createOffer(); })
      .then(function (o) { stage("offer"); return mine.setLocalDescription(o); })
      .then(function () { return gathered(mine); })
      .then(function () {
        stage("gathered");
        return api("/api/v1/meetings", "POST", { node_id: NODE, sdp: mine.localDescription.sdp, camera: camera });
      })
      .then(function (ans) {
        if (mine !== pc) { api("/api/v1/meetings/" + ans.session, "DELETE").catch(function () {}); return; }
        state.session = ans.session;
        state.answeredMs = performance.now() - state.clickedAt;
        state.stages.answered = state.answeredMs;
        if (ans.camera) $("[data-test=meeting-camera]").value = ans.camera;
        setState("connecting");
        timer = setInterval(sample, STATS_MS);
        return mine.setRemoteDescription({ type: "answer", sdp: ans.sdp });
      })
      .catch(function (e) {
        if (mine !== pc) return;
        state.error = e.message;
        release();
        setState("failed", e.message);
        history();
      });
  }

  function hangUp(why) {
    var session = state.session;
    state.session = null;
    if (timer) { clearInterval(timer); timer = null; }
    setState(why === "failed" ? "failed" : "ended", why === "failed" ? "ICE" : undefined);
    if (!session) { release(); return; }
    // The last quality figures go with the record, then the hang-up through central; the peer
    // connection closes after, so the node hears the hang-up before it sees the media end.
    var final = Object.keys(state.stats).length
      ? api("/api/v1/meetings/" + session + "/stats", "POST", state.stats).catch(function () {})
      : Promise.resolve();
    final.then(function () { return api("/api/v1/meetings/" + session, "DELETE"); })
      .catch(function () {})
      .then(function () { if (!state.session) release(); history(); });
  }

  function sample() {
    if (!pc) return;
    var p = pc;
    p.getStats().then(function (report) {
      var s = {};
      report.forEach(function (r) {
        if (r.type === "inbound-rtp" && r.kind === "video") {
          s.frames_decoded = r.framesDecoded || 0;
          s.frames_dropped = r.framesDropped || 0;
          s.packets_lost = r.packetsLost || 0;
          var total = (r.packetsReceived || 0) + (r.packetsLost || 0);
          s.loss_pct = total ? (100 * (r.packetsLost || 0)) / total : 0;
          s.jitter_ms = (r.jitter || 0) * 1000;
          if (r.frameWidth) { s.width = r.frameWidth; s.height = r.frameHeight; }
          if (r.framesPerSecond) s.fps = r.framesPerSecond;
          if (last && r.bytesReceived >= last.bytes) {
            s.bitrate_kbps = (8 * (r.bytesReceived - last.bytes)) / (r.timestamp - last.ts);
          }
          last = { bytes: r.bytesReceived || 0, ts: r.timestamp };
        }
        if (r.type === "candidate-pair" && r.nominated && r.currentRoundTripTime != null) {
          s.rtt_ms = r.currentRoundTripTime * 1000;
        }
      });
      window.meetingAV.sample(report, s);
      if (p !== pc) return;
      state.framesDecoded = s.frames_decoded || 0;
      if (state.framesDecoded > 0 && state.firstFrameMs == null) {
        state.firstFrameMs = performance.now() - state.clickedAt;
        s.first_frame_ms = state.firstFrameMs;
      } else if (state.firstFrameMs != null) {
        s.first_frame_ms = state.firstFrameMs;
      }
      state.stats = s;
      showQuality(s);
      ticks += 1;
      if (state.session && ticks % POST_STATS_EVERY === 0) {
        api("/api/v1/meetings/" + state.session + "/stats", "POST", s).then(function (rec) {
          if (rec.state === "ended" && p === pc) { release(); state.session = null; setState("ended"); history(); }
        }).catch(function () {});
      }
    });
  }

  function fmt(v, digits, unit) { return v == null ? "—" : v.toFixed(digits) + (unit || ""); }

  function showQuality(s) {
    $("[data-test=meeting-quality]").innerHTML =
      "<dt>" + esc(t("meeting_rtt")) + "</dt><dd data-test=q-rtt>" + fmt(s.rtt_ms, 0, " ms") + "</dd>" +
      "<dt>" + esc(t("meeting_loss")) + "</dt><dd data-test=q-loss>" + fmt(s.loss_pct, 1, "%") + "</dd>" +
      "<dt>" + esc(t("meeting_bitrate")) + "</dt><dd data-test=q-bitrate>" + fmt(s.bitrate_kbps, 0, " kbit/s") + "</dd>" +
      "<dt>" + esc(t("meeting_frames")) + "</dt><dd data-test=q-frames>" + (s.frames_decoded || 0) + "</dd>" +
      "<dt>" + esc(t("meeting_resolution")) + "</dt><dd>" + (s.width ? s.width + "×" + s.height : "—") + "</dd>";
  }

  // Best effort: a refusal (offline, busy, too many prepares) only means a slower call.
  function prepare() {
    var cam = $("[data-test=meeting-camera]").value || null;
    return api("/api/v1/meetings/prepare", "POST", { node_id: NODE, camera: cam })
      .then(function () { state.prepared = { camera: cam, ok: true }; })
      .catch(function () { state.prepared = { camera: cam, ok: false }; });
  }

  function switchCamera() {
    var cam = $("[data-test=meeting-camera]").value;
    if (!state.session && state.state !== "calling") { prepare(); return; }
    if (!state.session || !cam) return;
    api("/api/v1/meetings/" + state.session + "/camera", "POST", { camera: cam }).catch(function (e) {
      state.error = e.message;
    });
  }

  function cameras() {
    var sel = $("[data-test=meeting-camera]");
    sel.innerHTML = '<option value="">' + esc(t("meeting_camera_default")) + "</option>";
    return api("/api/v1/devices?code=" + VILLAGE + "&kind=camera&limit=2000").then(function (r) {
      r.devices.filter(function (d) { return d.node_id === NODE; }).forEach(function (d) {
        var o = document.createElement("option");
        o.value = d.device_id;
        o.textContent = (d.name || d.device_id) + " (" + d.device_id + ")";
        sel.appendChild(o);
      });
    }).catch(function () {});
  }

  function fmtTime(ts) { return ts ? new Date(ts * 1000).toLocaleString(boot.lang) : "—"; }

  function history() {
    return api("/api/v1/meetings?village=" + VILLAGE + "&limit=20").then(function (r) {
      var box = $("[data-test=meeting-history]");
      if (!r.meetings.length) { box.innerHTML = '<p class="muted">' + esc(t("meeting_no_history")) + "</p>"; return; }
      box.innerHTML = "<table><thead><tr><th>" + esc(t("meeting_col_started")) + "</th><th>" +
        esc(t("meeting_col_user")) + "</th><th>" + esc(t("meeting_camera")) + "</th><th>" +
        esc(t("meeting_col_duration")) + "</th><th>" + esc(t("meeting_col_end")) + "</th></tr></thead><tbody>" +
        r.meetings.map(function (m) {
          var dur = m.answered && m.ended ? Math.round(m.ended - m.answered) + " s" : "—";
          return '<tr data-test="history-row" data-session="' + esc(m.session) + '"><td>' + esc(fmtTime(m.started)) +
            "</td><td>" + esc(m.user) + "</td><td>" + esc(m.camera || "") + "</td><td>" + dur + "</td><td>" +
            esc(m.end_reason || m.state) + "</td></tr>";
        }).join("") + "</tbody></table>";
    }).catch(function () {});
  }

  subpageHead(t("meeting_title", { node: NODE }), "#/n/" + encodeURIComponent(NODE));
  $("[data-test=meeting-title]").textContent = t("meeting_title", { node: NODE });
  $("[data-test=camera-label]").textContent = t("meeting_camera");
  $("[data-test=meeting-call]").textContent = t("meeting_call");
  $("[data-test=meeting-hangup]").textContent = t("meeting_hangup");
  $("[data-test=quality-title]").textContent = t("meeting_quality");
  $("[data-test=history-title]").textContent = t("meeting_history");
  $("[data-test=meeting-call]").addEventListener("click", call);
  $("[data-test=meeting-hangup]").addEventListener("click", function () { hangUp(); });
  $("[data-test=meeting-camera]").addEventListener("change", switchCamera);
  window.addEventListener("pagehide", function () { if (state.session) hangUp(); });
  setState("idle");
  showQuality({});
  state.ready = Promise.all([prepare(), cameras(), history()]);
})();
