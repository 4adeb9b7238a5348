"""User-facing texts of the edge agent, zh-CN first then English, in one catalogue.

Config errors are keyed by pydantic's error ``type`` and formatted with the error's ``ctx``
placeholders; an unknown key falls back to pydantic's own (English) message.
"""

from __future__ import annotations

import errno
import re
from typing import Any

#: pydantic error type -> (zh-CN, English). Placeholders come from the error's ``ctx``.
CONFIG_ERRORS: dict[str, tuple[str, str]] = {
    "missing": ("缺少必填项", "field required"),
    "extra_forbidden": ("未知配置项（拼写错误？）", "unknown key (typo?)"),
    "extra_forbidden_meant": ("未知配置项，是否应为 {key}？", "unknown key: did you mean {key}?"),
    "int_type": ("应为整数", "must be an integer"),
    "int_parsing": ("应为整数", "must be an integer"),
    "int_from_float": ("应为整数", "must be an integer"),
    "float_type": ("应为数字", "must be a number"),
    "float_parsing": ("应为数字", "must be a number"),
    "bool_type": ("应为 true 或 false", "must be true or false"),
    "bool_parsing": ("应为 true 或 false", "must be true or false"),
    "string_type": ("应为字符串", "must be a string"),
    "model_type": ("应为一个表（[section]）", "must be a table ([section])"),
    "dict_type": ("应为一个表（[section]）", "must be a table ([section])"),
    "greater_than": ("应大于 {gt}", "must be greater than {gt}"),
    "greater_than_equal": ("应不小于 {ge}", "must be at least {ge}"),
    "less_than": ("应小于 {lt}", "must be less than {lt}"),
    "less_than_equal": ("应不大于 {le}", "must be at most {le}"),
    "string_too_short": ("至少 {min_length} 个字符", "must have at least {min_length} characters"),
    "string_too_long": ("最多 {max_length} 个字符", "must have at most {max_length} characters"),
    "literal_error": ("应为以下之一：{expected}", "must be one of: {expected}"),
    "enum": ("应为以下之一：{expected}", "must be one of: {expected}"),
    "port": ("应为 1–65535 的整数", "must be an integer 1–65535"),
    "node_id": (
        "节点编号应为「12 位村级统计代码-名称」，如 450102001001-a",
        "node id must be <12-digit village code>-<name>, e.g. 450102001001-a",
    ),
    "sia_account": ("账号应为 3–16 位十六进制数字", "the account must be 3-16 hex digits"),
    "sia_key": (
        "密钥应为 32、48 或 64 位十六进制数字（AES-128/192/256）",
        "the key must be 32, 48 or 64 hex digits (AES-128/192/256)",
    ),
    "sia_account_twice": ("账号 {account} 配置了两次", "account {account} is configured twice"),
    "url": ("不是合法的 URL", "not a valid URL"),
    "url_scheme": ("应为带主机的 {schemes} URL", "must be a {schemes} URL with a host"),
    "url_userinfo": (
        "用户名和密码请写在 username / password 项，不要写在 URL 里",
        "put the user name and password in their keys, not in the URL",
    ),
    "info_system_target": (
        "请设置 url，或同时设置 host 和 port（二选一）",
        "set either url, or host and port",
    ),
    "device_twice": ("设备编号 {id} 用了两次", "device id {id} is used twice"),
    "meeting_camera": (
        "meetings.camera {id} 不是 [[cameras]] 中的摄像机编号",
        "meetings.camera {id} is not a [[cameras]] id",
    ),
    "turn_url": (
        "TURN 地址应为 turn:主机[:端口][?transport=udp|tcp] 或 turns:…",
        "must be turn:HOST[:PORT][?transport=udp|tcp] or turns:...",
    ),
    "relay_without_turn": (
        "relay_only 需要同时设置 turn_url（只用中继地址就必须有 TURN 服务器）",
        "relay_only needs turn_url (relay candidates come from a TURN server)",
    ),
    "relay_without_board": (
        "摄像机 {id} 设置了 relay，但没有配置 [alarm_board]（继电器在报警板上）",
        "camera {id} has a relay but there is no [alarm_board] (the relay is on the board)",
    ),
    "toml": ("TOML 语法错误：{where_zh}", "TOML syntax error: {detail}"),
    "file": ("无法读取配置文件 {path}：{why_zh}", "cannot read the config file: {detail}"),
    "missing_file": (
        "证书文件不存在：{path}（重新运行 shilian provision node，或改正路径）",
        "file not found: {path} (rerun shilian provision node, or correct the path)",
    ),
}

#: Other user-facing lines (CLI, local API).
TEXTS: dict[str, tuple[str, str]] = {
    "config_ok": (
        "配置有效：节点 {node_id}，broker {host}:{port}，outbox {outbox}",
        "config valid: node {node_id}, broker {host}:{port}, outbox {outbox}",
    ),
    "config_errors": ("配置有 {n} 处错误", "{n} error(s) in the config"),
    "agent_unreachable": (
        "无法连接本地 agent 套接字 {path}：{detail}",
        "cannot reach the agent's local socket {path}: {detail}",
    ),
    "emit_failed": ("事件未被接受：{detail}", "event not accepted: {detail}"),
    "bad_json": ("--data 不是合法的 JSON 对象", "--data is not a JSON object"),
}

#: Why a camera, terminal or link has its health (``detail.reason`` of its device state).
DEVICE_REASONS: dict[str, tuple[str, str]] = {
    "ok": ("工作正常", "working normally"),
    "tcp_failed": ("无法连接 {addr}：{detail}", "cannot connect to {addr}: {detail}"),
    "auth_failed": (
        "RTSP 用户名或密码错误（401），请核对配置",
        "RTSP user name or password refused (401): check the configuration",
    ),
    "rtsp_status": ("RTSP {method} 返回 {status}", "RTSP {method} answered {status}"),
    "rtsp_silent": ("RTSP {method} 无应答", "no answer to RTSP {method}"),
    "rtsp_protocol": (
        "摄像机应答不符合 RTSP：{detail}",
        "the camera's answer is not RTSP: {detail}",
    ),
    "no_h264": ("没有 H.264 视频流：{detail}", "no H.264 video stream: {detail}"),
    "undecodable": ("关键帧无法解码：{detail}", "key frame does not decode: {detail}"),
    "no_rtp": ("{seconds} 秒未收到视频数据（RTP）", "no video data (RTP) for {seconds} s"),
    "no_keyframe": ("{seconds} 秒未收到关键帧", "no key frame for {seconds} s"),
    "black": ("画面全黑", "the picture is black"),
    "frozen": ("画面 {seconds} 秒无变化（冻结）", "the picture has not changed for {seconds} s"),
    "clock_wrong": (
        "摄像机时钟偏差 {drift} 秒，录像时间不可信",
        "camera clock off by {drift} s: recording times are wrong",
    ),
    "sip_status": ("SIP OPTIONS 返回 {status}", "SIP OPTIONS answered {status}"),
    "sip_silent": ("SIP OPTIONS {seconds} 秒无应答", "no answer to SIP OPTIONS in {seconds} s"),
    "sip_refused": ("端口不可达：{detail}", "port unreachable: {detail}"),
    "http_status": ("健康检查返回 HTTP {status}", "health check answered HTTP {status}"),
    "http_failed": ("健康检查失败：{detail}", "health check failed: {detail}"),
}


def _fill(template: str, ctx: dict[str, Any]) -> str:
    try:
        return template.format(**ctx)
    except (KeyError, IndexError, ValueError):
        return template


_TOML_AT = re.compile(r"\(at line (\d+), column (\d+)\)")
_TOML_END = re.compile(r"\(at end of document\)")
_OS_ZH = {
    errno.ENOENT: "文件不存在，检查路径",
    errno.EACCES: "没有读取权限（代理以 shilian 用户运行）",
    errno.EISDIR: "这是一个目录，不是文件",
}


def toml_where_zh(err: Exception) -> str:
    """Where a TOML syntax error is, in Chinese (tomllib's text is English only)."""
    m = _TOML_AT.search(str(err))
    if m:
        return f"第 {m.group(1)} 行第 {m.group(2)} 列附近，检查引号、等号与方括号"
    if _TOML_END.search(str(err)):
        return "文件末尾不完整，检查引号与方括号是否成对"
    return "检查引号、等号与方括号"


def os_error_zh(err: OSError) -> str:
    """Why a file could not be read, in Chinese."""
    return _OS_ZH.get(err.errno or 0, f"读取失败（错误码 {err.errno}）")


def config_error(err_type: str, ctx: dict[str, Any] | None, fallback: str) -> str:
    """``"<zh> / <en>"`` for one config error; pydantic's message when the type is unknown."""
    pair = CONFIG_ERRORS.get(err_type)
    if pair is None:  # a check this catalogue does not name yet: no English in the zh half
        return f"配置值无效（{err_type}） / {fallback}"
    c = ctx or {}
    return f"{_fill(pair[0], c)} / {_fill(pair[1], c)}"


def text(key: str, **ctx: Any) -> str:
    """``"<zh> / <en>"`` for a catalogue key."""
    zh, en = TEXTS[key]
    return f"{_fill(zh, ctx)} / {_fill(en, ctx)}"


def reason(key: str, **ctx: Any) -> str:
    """``"<zh> / <en>"`` for a device-health reason key."""
    zh, en = DEVICE_REASONS[key]
    return f"{_fill(zh, ctx)} / {_fill(en, ctx)}"
