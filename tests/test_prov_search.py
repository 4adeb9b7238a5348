"""Village search (pure, over the packaged Nanning registry) and the generated files."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from edge.config import parse_config
from provisioning.broker_config import acl_text
from provisioning.flow import State, edge_config_data, to_toml
from provisioning.search import search
from registry import Registry


@pytest.fixture(scope="module")
def nanning() -> Registry:
    return Registry.from_package("4501")


def test_search_by_names_and_codes(nanning: Registry) -> None:
    top = search(nanning, "兴宁 三塘")[0]
    assert top.code.startswith("450102101") and top.path[1:3] == ("兴宁区", "三塘镇")
    assert all(m.code.startswith("450102001") for m in search(nanning, "450102001"))
    assert search(nanning, "三塘村")[0].name == "三塘村委会"  # exact-ish village name first
    assert search(nanning, "兴宁区 三塘村委会")[0].code == "450102101201"
    assert search(nanning, "不存在的地方") == []
    assert search(nanning, "   ") == []
    assert len(search(nanning, "村", limit=5)) == 5


def test_former_names_still_find_renamed_units(nanning: Registry) -> None:
    """横县 became 横州市 in 2021; people and old maps still say 横县."""
    found = search(nanning, "横县", limit=5)
    assert found and all(m.code.startswith("450181") for m in found)
    assert "横州市" in found[0].path and "横县" not in found[0].path  # shown by today's name
    assert all(m.code.startswith("450110") for m in search(nanning, "武鸣县", limit=5))


def test_acl_confines_nodes() -> None:
    acl = acl_text()
    assert "pattern write shilian/v1/%u/event" in acl
    assert "pattern write shilian/v1/%u/#" not in acl  # cmd/req and cert/res are central's
    assert "pattern read shilian/v1/%u/cmd/req" in acl
    assert "pattern read shilian/v1/%u/state" in acl
    central = acl.split("user shilian-central")[1].split("user ")[0]
    assert "topic read shilian/v1/#" in central and "topic write shilian/v1/+/cmd/req" in central


def test_written_edge_config_is_valid_toml_and_config(tmp_path: Path) -> None:
    state = State.open(tmp_path / "n")
    state.data.update(node_id="450102101201-a", broker={"host": "10.0.0.1", "port": 8883})
    data = edge_config_data(
        state, **{"outbox.path": "/var/lib/x 文件.db", "health_interval_s": 5.0}
    )
    text = to_toml(data)
    assert tomllib.loads(text) == data
    cfg = parse_config(tomllib.loads(text))
    assert cfg.broker.tls is not None and cfg.broker.tls.key_file.name == "node.key"
    assert (tmp_path / "n").stat().st_mode & 0o077 == 0  # the work dir holds the private key
