"""Central started on a database it cannot reach says so in one line, in Chinese and English,
and exits 1: a technician reads which database and why, not a traceback."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again when the socket is: nothing listens


@pytest.mark.parametrize("role", [[], ["--role", "ingest"]], ids=["central", "ingest"])
def test_an_unreachable_postgresql_is_a_clear_error_not_a_traceback(
    tmp_path: Path, role: list[str]
) -> None:
    port = _closed_port()
    cfg = tmp_path / "central.toml"
    cfg.write_text(
        f'[store]\nurl = "postgresql://shilian:secret@127.0.0.1:{port}/shilian"\n'
        f"[broker]\nport = {_closed_port()}\n[http]\nport = 0\n"
        '[ingest]\nshared_group = "central"\n'
    )
    done = subprocess.run(
        [sys.executable, "-m", "shilian", "central", "run", "--config", str(cfg), *role],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    assert "无法连接数据库 / cannot reach the database" in done.stderr
    assert f"127.0.0.1:{port}/shilian" in done.stderr
    assert "secret" not in done.stderr  # the password is never printed
