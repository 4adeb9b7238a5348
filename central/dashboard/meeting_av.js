// The meeting page's sound and picture towards the village, and its network set-up
// (docs/meetings.md): the RTCConfiguration central gives the page (TURN server with short-lived
// credentials, relay only or not), the operator's microphone and camera offered to the village
// (it takes what its box can play), the village's sound played, and the figures getStats gives
// about them. meeting.js calls these hooks; without a microphone or camera the call is video
// from the village only.
window.meetingAV = (function () {
  "use strict";
  var local = null; // the operator's MediaStream
  var speaker = null; // <audio> playing the village
  // The operator's picture: 640x480 is plenty on a village screen and light to decode on its box.
  var CAMERA = { width: { ideal: 640 }, height: { ideal: 480 }, frameRate: { ideal: 15 } };

  function config(boot) {
    var ice = boot.ice || {};
    return { iceServers: ice.iceServers || [], iceTransportPolicy: ice.iceTransportPolicy || "all" };
  }

  function media() {
    var md = navigator.mediaDevices;
    if (!md || !md.getUserMedia) return Promise.resolve(null);
    return md.getUserMedia({ audio: true, video: CAMERA })
      .catch(function () { return md.getUserMedia({ audio: true }); })
      .catch(function () { return null; });
  }

  // Before the offer: the microphone (sent, and the village's sound received) and the camera on
  // the video transceiver (sent only if the village's box has a screen: it answers so).
  function prepare(pc, video) {
    release();
    return media().then(function (stream) {
      local = stream;
      var mic = stream && stream.getAudioTracks()[0];
      if (mic) pc.addTransceiver(mic, { direction: "sendrecv", streams: [stream] });
      else pc.addTransceiver("audio", { direction: "recvonly" });
      var cam = stream && stream.getVideoTracks()[0];
      if (cam && video) {
        video.direction = "sendrecv";
        return video.sender.replaceTrack(cam);
      }
    });
  }

  // A track from the village: its sound is played here (the video element stays muted).
  function track(ev) {
    if (ev.track.kind !== "audio") return false;
    if (!speaker) {
      speaker = document.createElement("audio");
      speaker.autoplay = true;
      speaker.dataset.test = "meeting-audio";
      document.body.appendChild(speaker);
    }
    speaker.srcObject = new MediaStream([ev.track]);
    return true;
  }

  // Figures for the quality panel and the record: sound received, and which way the selected
  // candidate pair goes (host, srflx or relay on each side).
  function sample(report, s) {
    var pair = null;
    report.forEach(function (r) {
      if (r.type === "inbound-rtp" && r.kind === "audio") {
        s.audio_packets_received = r.packetsReceived || 0;
        s.audio_level = r.audioLevel || 0;
      }
      if (r.type === "outbound-rtp" && r.kind === "audio") s.audio_packets_sent = r.packetsSent || 0;
      if (r.type === "outbound-rtp" && r.kind === "video") s.video_frames_sent = r.framesSent || 0;
      if (r.type === "transport" && r.selectedCandidatePairId) pair = report.get(r.selectedCandidatePairId);
    });
    if (pair) {
      var l = report.get(pair.localCandidateId), rm = report.get(pair.remoteCandidateId);
      if (l) s.local_candidate = l.candidateType;
      if (rm) s.remote_candidate = rm.candidateType;
    }
  }

  function release() {
    if (local) { local.getTracks().forEach(function (tr) { tr.stop(); }); local = null; }
    if (speaker) { speaker.srcObject = null; }
  }

  return { config: config, prepare: prepare, track: track, sample: sample, release: release };
})();
