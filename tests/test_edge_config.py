"""Edge config: every error explained with its dotted path, in Chinese and English."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel
from typer.testing import CliRunner

from edge.cli import app
from edge.config import ConfigError, EdgeConfig, load_config, parse_config
from edge.texts import CONFIG_ERRORS

GOOD = """
node_id = "450102001001-a"
health_interval_s = 10
[broker]
host = "broker.example"
port = 8883
password = "s3cret"
[outbox]
path = "/tmp/x/outbox.sqlite3"
max_events = 5000
"""

BAD = """
node_id = "4501-a"
health_interval_s = 0
log_levle = "DEBUG"
[broker]
port = 70000
keepalive_s = "thirty"
[outbox]
max_events = 5
[metrics]
enabled = "maybe"
"""


def test_defaults_and_redaction(tmp_path: Path) -> None:
    f = tmp_path / "edge.toml"
    f.write_text(GOOD)
    cfg = load_config(f)
    assert cfg.client_id == "450102001001-a"
    assert cfg.broker.keepalive_s == 30 and cfg.shutdown_flush_s == 5.0
    assert cfg.metrics.port == 9108 and str(cfg.local_socket.path) == "/run/shilian/edge.sock"
    red = cfg.redacted()
    assert red["broker"]["password"] == "***" and "s3cret" not in str(red)
    assert cfg.broker.password == "s3cret"


def test_every_field_has_a_description() -> None:
    def walk(model: type[BaseModel]) -> None:
        for name, field in model.model_fields.items():
            assert field.description, f"{model.__name__}.{name} has no description"
            ann = field.annotation
            if isinstance(ann, type) and issubclass(ann, BaseModel):
                walk(ann)

    walk(EdgeConfig)


def test_every_error_explained_with_path_in_both_languages(tmp_path: Path) -> None:
    f = tmp_path / "edge.toml"
    f.write_text(BAD)
    with pytest.raises(ConfigError) as e:
        load_config(f)
    got = {p.path: p.message for p in e.value.problems}
    assert got["broker.port"] == "应为 1–65535 的整数 / must be an integer 1–65535"
    assert set(got) == {
        "node_id",
        "health_interval_s",
        "log_levle",
        "broker.port",
        "broker.keepalive_s",
        "outbox.max_events",
        "metrics.enabled",
    }
    assert "未知配置项" in got["log_levle"] and "unknown key" in got["log_levle"]
    assert "12 位" in got["node_id"] and "12-digit" in got["node_id"]
    assert got["outbox.max_events"] == "应不小于 10 / must be at least 10"
    for msg in got.values():
        zh, en = msg.split(" / ", 1)
        assert any("\u4e00" <= c <= "\u9fff" for c in zh), msg
        assert en.isascii() or "–" in en, msg


def test_missing_node_id_and_wrong_section_type() -> None:
    with pytest.raises(ConfigError) as e:
        parse_config({"broker": "localhost"})
    got = {p.path: p.message for p in e.value.problems}
    assert got["node_id"] == "缺少必填项 / field required"
    assert got["broker"].startswith(CONFIG_ERRORS["model_type"][0])


def test_unreadable_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="无法读取"):
        load_config(tmp_path / "missing.toml")
    f = tmp_path / "bad.toml"
    f.write_text("node_id = \n")
    with pytest.raises(ConfigError, match="TOML 语法错误"):
        load_config(f)


def test_check_config_cli(tmp_path: Path) -> None:
    runner = CliRunner()
    good, bad = tmp_path / "good.toml", tmp_path / "bad.toml"
    good.write_text(GOOD)
    bad.write_text(BAD)
    ok = runner.invoke(app, ["check-config", str(good)])
    assert ok.exit_code == 0, ok.output
    assert "配置有效" in ok.output and "450102001001-a" in ok.output
    assert len(ok.output.strip().splitlines()) == 1
    res = runner.invoke(app, ["check-config", str(bad)])
    assert res.exit_code == 1
    assert "broker.port: 应为 1–65535 的整数 / must be an integer 1–65535" in res.output
    assert "7 error(s)" in res.output


def _zh_part(problem: str) -> str:
    return problem.split(" / ", 1)[0]


def test_file_and_syntax_errors_are_chinese_in_the_chinese_part(tmp_path: Path) -> None:
    import re

    missing = tmp_path / "edge.toml"
    bad = tmp_path / "bad.toml"
    bad.write_text('node_id = "450102001001-a"\n[broker\nport = 1883\n')
    for path, expect in ((missing, "文件不存在"), (bad, "第 2 行")):
        with pytest.raises(ConfigError) as e:
            load_config(path)
        zh = _zh_part(e.value.problems[0].message)
        assert expect in zh, zh
        # no English words from the parser or the OS in the Chinese half (the path may appear)
        assert not re.search(r"\b[a-z]{3,}\b", zh.replace(str(path), "")), zh


def test_meetings_config_conference_camera_turn_and_redaction() -> None:
    cams = [
        {"id": "cam-a", "rtsp_url": "rtsp://10.0.0.2/1"},
        {"id": "cam-b", "rtsp_url": "rtsp://10.0.0.3/1"},
    ]
    base = {"node_id": "450102001001-a", "cameras": cams}
    assert parse_config(base).conference_camera == "cam-a"  # default: the first camera
    cfg = parse_config(
        {**base, "meetings": {"camera": "cam-b", "turn_url": "turn:10.8.0.1:3478?transport=udp",
                              "turn_username": "v", "turn_password": "secret"}}
    )  # fmt: skip
    assert cfg.conference_camera == "cam-b"
    assert cfg.redacted()["meetings"]["turn_password"] == "***"
    assert parse_config({"node_id": "450102001001-a"}).conference_camera is None
    for meetings, key in (
        ({"camera": "cam-x"}, "meetings.camera"),
        ({"turn_url": "stun:stun.l.google.com:19302"}, "turn_url"),
        ({"turn_url": "turn:10.8.0.1:99999"}, "turn_url"),
    ):
        with pytest.raises(ConfigError) as e:
            parse_config({**base, "meetings": meetings})
        text = str(e.value)
        assert key in text and ("TURN" in text or "摄像机" in text), text


def test_meetings_relay_only_needs_turn_and_the_secret_is_redacted() -> None:
    base = {"node_id": "450102001001-a"}
    with pytest.raises(ConfigError) as e:
        parse_config({**base, "meetings": {"relay_only": True}})
    assert "relay_only" in str(e.value) and "turn_url" in str(e.value) and "中继" in str(e.value)
    cfg = parse_config(
        {**base, "meetings": {"turn_url": "turn:10.8.0.1:3478", "turn_secret": "s3cret",
                              "relay_only": True, "audio_in": "plughw:1,0", "audio_out": "default",
                              "video_out": "/dev/fb0", "video_out_size": "1920x1080"}}
    )  # fmt: skip
    assert cfg.redacted()["meetings"]["turn_secret"] == "***"
    assert cfg.meetings.relay_only and cfg.meetings.video_out == "/dev/fb0"
    with pytest.raises(ConfigError):
        parse_config({**base, "meetings": {"video_out": "/dev/fb0", "video_out_size": "big"}})


def test_check_config_fails_naming_each_missing_tls_file(tmp_path: Path) -> None:
    """A config whose certificate files are not there cannot connect: check-config says which
    file is missing (zh / en) instead of passing it."""
    (tmp_path / "ca.pem").write_text("CA")
    conf = tmp_path / "edge.toml"
    conf.write_text(
        GOOD
        + f'[broker.tls]\nca_file = "{tmp_path / "ca.pem"}"\n'
        + f'cert_file = "{tmp_path / "node.pem"}"\nkey_file = "{tmp_path / "node.key"}"\n'
    )
    res = CliRunner().invoke(app, ["check-config", str(conf)])
    assert res.exit_code == 1, res.output
    out = "".join(res.output.split())  # the runner may wrap long lines
    assert "broker.tls.cert_file:证书文件不存在" in out and str(tmp_path / "node.pem") in out
    assert "broker.tls.key_file" in out and str(tmp_path / "node.key") in out
    assert "broker.tls.ca_file" not in out
    assert "filenotfound" in out.lower()
    for f in ("node.pem", "node.key"):
        (tmp_path / f).write_text("x")
    ok = CliRunner().invoke(app, ["check-config", str(conf)])
    assert ok.exit_code == 0, ok.output


def test_a_misspelt_key_names_the_key_it_should_be(tmp_path: Path) -> None:
    """``cert_fle`` for ``cert_file``, ``keepalive`` for ``keepalive_s``: check-config says which
    key was meant, not only that the typed one is unknown."""
    for f in ("ca.pem", "node.pem", "node.key"):
        (tmp_path / f).write_text("x")
    conf = tmp_path / "edge.toml"
    conf.write_text(
        GOOD.replace("[broker]\n", "[broker]\nkeepalive = 30\n")
        + f'[broker.tls]\nca_file = "{tmp_path / "ca.pem"}"\n'
        + f'cert_fle = "{tmp_path / "node.pem"}"\nkey_file = "{tmp_path / "node.key"}"\n'
    )
    res = CliRunner().invoke(app, ["check-config", str(conf)])
    assert res.exit_code == 1, res.output
    out = "".join(res.output.split())
    assert "broker.tls.cert_fle:未知配置项，是否应为cert_file？" in out, res.output
    assert "didyoumeancert_file?" in out
    assert "broker.keepalive:未知配置项，是否应为keepalive_s？" in out
    # A key like nothing we know still says it is unknown, with no guess.
    conf.write_text(GOOD + "colour = 'red'\n")
    res = CliRunner().invoke(app, ["check-config", str(conf)])
    out = "".join(res.output.split())
    assert "colour:未知配置项（拼写错误？）" in out and "是否应为" not in out, res.output
