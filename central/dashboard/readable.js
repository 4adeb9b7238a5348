// Codes the API returns, made readable for the operators: event and alarm kinds by their
// catalogue names (strings.toml "event_<kind>"; a kind this version does not know is shown by
// its code), and command results (ping, 读取配置) as labelled fields with times as dates.
// Loaded before app.js; uses its helpers (t, esc, fmtTime, fmtInt) when called.
"use strict";

function eventKindName(k) {
  return BOOT.strings[`event_${k}`] ? t(`event_${k}`) : k;
}

// Keys of command results whose value is a Unix time.
const RESULT_TIMES = new Set(["pong", "ts", "at", "time", "since", "started_at", "not_after"]);
// get-config's nested sections are flattened to "section.key" rows up to this depth; deeper
// values are shown as compact text (a camera's zone list, not a tree).
const RESULT_DEPTH = 3;

function resultValue(key, v) {
  if (v === null || v === undefined) return "—";
  if (typeof v === "boolean") return t(v ? "value_yes" : "value_no");
  if (typeof v === "number" && RESULT_TIMES.has(key) && v > 1e9) return fmtTime(v);
  if (typeof v === "number") return fmtInt(v);
  if (typeof v === "object") return JSON.stringify(v);
  return String(v);
}

function resultRows(obj, prefix, depth, out) {
  for (const [k, v] of Object.entries(obj)) {
    const path = prefix ? `${prefix}.${k}` : k;
    if (v && typeof v === "object" && !Array.isArray(v) && depth < RESULT_DEPTH) resultRows(v, path, depth + 1, out);
    else if (Array.isArray(v) && v.length && typeof v[0] === "object" && depth < RESULT_DEPTH) v.forEach((item, i) => resultRows(item, `${path}[${i + 1}]`, depth + 1, out));
    else out.push([path, k, v]);
  }
  return out;
}

// A command's result as a definition list; rttMs: the round trip the page measured.
function commandResult(cmd, result, rttMs) {
  const rows = resultRows(result || {}, "", 0, []).map(([path, key, v]) => {
    const label = BOOT.strings[`result_${path.replace(/[.[\]]+/g, "_").replace(/_$/, "")}`];
    return `<dt>${esc(label ? t(`result_${path.replace(/[.[\]]+/g, "_").replace(/_$/, "")}`) : path)}</dt><dd>${esc(resultValue(key, v))}</dd>`;
  });
  const rtt = `<dt>${esc(t("result_rtt"))}</dt><dd>${esc(t("result_rtt_ms", { ms: fmtInt(Math.round(rttMs)) }))}</dd>`;
  return `<div>${esc(t("action_ok"))}${COLON}${esc(t(`action_${cmd.replace("-", "_")}`))}</div>
    <dl class="kv" data-test="result-fields">${rtt}${rows.join("")}</dl>`;
}
