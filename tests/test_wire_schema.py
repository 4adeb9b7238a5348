"""docs/schemas/*.json are the wire models' JSON Schemas, and they say what the codec does."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from wire import Kind
from wire.schema import SCHEMA_DIR, file_name, file_names, main, render

ROOT = Path(__file__).resolve().parent.parent


def test_committed_schemas_equal_the_generated_ones() -> None:
    for kind in Kind:
        path = ROOT / SCHEMA_DIR / file_name(kind)
        assert path.exists(), f"{path} missing: run python -m wire.schema"
        assert path.read_text(encoding="utf-8") == render(kind), f"{path} is stale"
    assert main(["--check", "--dir", str(ROOT / SCHEMA_DIR)]) == 0
    assert sorted(p.name for p in (ROOT / SCHEMA_DIR).glob("*.json")) == sorted(file_names())


@pytest.mark.parametrize("kind", list(Kind))
def test_v_is_required_and_fields_are_bounded(kind: Kind) -> None:
    doc = json.loads(render(kind))
    assert doc["required"][0] == "v"
    if kind is Kind.HEALTH:
        interval = doc["properties"]["interval_s"]
        assert (interval["minimum"], interval["maximum"]) == (1.0, 3600.0)
        assert {"node", "boot_id", "ts", "interval_s"} <= set(doc["required"])


def test_check_reports_a_stale_file(tmp_path: Path) -> None:
    assert main(["--dir", str(tmp_path)]) == 0
    assert main(["--check", "--dir", str(tmp_path)]) == 0
    (tmp_path / file_name(Kind.HEALTH)).write_text("{}\n", encoding="utf-8")
    assert main(["--check", "--dir", str(tmp_path)]) == 1
