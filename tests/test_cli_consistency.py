"""The command line speaks one dialect: the same flag for the same thing, dates where people
think in dates, both languages in every help text."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.main import get_command
from typer.testing import CliRunner

from central.cli import parse_since
from shilian.cli import app

runner = CliRunner()


def test_ca_directory_is_ca_dir_everywhere(tmp_path: Path) -> None:
    ca = tmp_path / "ca"
    assert runner.invoke(app, ["provision", "ca", "init", "--ca-dir", str(ca)]).exit_code == 0
    r = runner.invoke(
        app, ["provision", "ca", "client-cert", "--ca-dir", str(ca), "--out", str(tmp_path / "c")]
    )
    assert r.exit_code == 0, r.output
    # the old spelling still works for scripts written against it
    r = runner.invoke(app, ["provision", "ca", "init", "--dir", str(tmp_path / "ca2")])
    assert r.exit_code == 0, r.output


@pytest.mark.parametrize("side", ["edge", "central"])
def test_check_config_takes_config_like_run(side: str, tmp_path: Path) -> None:
    missing = tmp_path / "none.toml"
    for argv in (["--config", str(missing)], [str(missing)]):
        r = runner.invoke(app, [side, "check-config", *argv])
        assert r.exit_code == 1 and str(missing) in "".join(r.output.split()), r.output


def test_since_takes_dates_and_times() -> None:
    assert parse_since("2026-12-01") == dt.datetime(2026, 12, 1).timestamp()
    assert parse_since("2026-12-01 08:30") == dt.datetime(2026, 12, 1, 8, 30).timestamp()
    assert parse_since("1764547200") == 1764547200.0
    with pytest.raises(ValueError, match="2026-12-01"):
        parse_since("yesterday")


def _commands(group: typer.Typer) -> list[tuple[str, str]]:
    """(command path, its help and every option's help) for each command of ``group``."""
    out: list[tuple[str, str]] = []

    def walk(cmd: Any, path: str) -> None:  # typer's own click: its classes are private
        texts = [cmd.help or ""] + [getattr(p, "help", "") or "" for p in cmd.params]
        out.append((path, "\n".join(texts)))
        if hasattr(cmd, "commands"):
            for name, sub in cmd.commands.items():
                walk(sub, f"{path} {name}")

    walk(get_command(group), "shilian")
    return out


def test_every_help_is_bilingual_and_speaks_of_the_product() -> None:
    cjk = re.compile(r"[\u4e00-\u9fff]")
    latin = re.compile(r"[A-Za-z]{3,}")
    for path, text in _commands(app):
        first = text.split("\n", 1)[0]
        if not first:
            continue
        assert cjk.search(first) and latin.search(first), f"{path}: {first!r}"
        assert not re.search(r"\bissue \d|\bitem \d|\bH\d\b|TODO", text), f"{path}: {text!r}"
