"""The administrator's token commands as a technician's supervisor uses them: mistakes are
refused at the first step with the reason, not discovered at the end of a site visit."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from central.db import Target, open_db
from central.registry_store import import_registry
from central.tokens import TokenError, TokenStore
from provisioning.cli import app

runner = CliRunner()
#: A real village of 兴宁区 (NBS 2023) and a code with a valid shape that is no village.
VILLAGE = "450102001003"
NOT_A_VILLAGE = "450102999999"


@pytest.fixture
def central_db(tmp_path: Path) -> Path:
    """A central database as central leaves it: the Nanning registry imported."""
    db = tmp_path / "central.sqlite3"
    conn = open_db(db)
    import_registry(conn, "4501")
    conn.close()
    return db


def run(*args: str) -> tuple[int, str, str]:
    r = runner.invoke(app, list(args))
    return r.exit_code, r.stdout, r.stderr


def test_unknown_village_is_refused_by_token_create(central_db: Path) -> None:
    code, _, err = run("token", "create", "--village", NOT_A_VILLAGE, "--db", str(central_db))
    assert code == 2 and NOT_A_VILLAGE in err and "unknown" in err
    code, _, err = run("token", "create", "--node", f"{NOT_A_VILLAGE}-a", "--db", str(central_db))
    assert code == 2 and NOT_A_VILLAGE in err
    conn = open_db(central_db)
    assert TokenStore(conn).tokens() == []
    conn.close()


def test_unknown_village_is_refused_by_keygen(tmp_path: Path) -> None:
    code, _, err = run("keygen", "--node", f"{NOT_A_VILLAGE}-a", "--dir", str(tmp_path / "n"))
    assert code != 0 and NOT_A_VILLAGE in err
    assert not (tmp_path / "n" / "node.key").exists()


def test_unknown_village_is_refused_by_provision_node_before_central(tmp_path: Path) -> None:
    """``provision node`` (what the technician runs) refuses the code before making a key or
    calling central (port 9 refuses: reaching it would say "cannot reach central")."""
    work = tmp_path / "n"
    code, out, err = run(
        *("node", "--node", f"{NOT_A_VILLAGE}-a", "--central", "http://127.0.0.1:9"),
        *("--token", "x" * 32, "--dir", str(work)),
    )
    said = "".join((out + err).split())
    assert code != 0 and NOT_A_VILLAGE in said, said
    assert "无法连接中心" not in said and "cannotreach" not in said
    assert not (work / "node.key").exists()


def test_mistyped_database_path_is_refused_not_created(tmp_path: Path) -> None:
    missing = tmp_path / "centrl.sqlite3"
    code, _, err = run("token", "create", "--village", VILLAGE, "--db", str(missing))
    assert code == 2 and str(missing) in err
    assert not missing.exists()


def test_ttl_needs_a_unit_and_a_usable_length(central_db: Path) -> None:
    for ttl in ("1", "30", "10s"):
        code, _, err = run(
            "token", "create", "--village", VILLAGE, "--ttl", ttl, "--db", str(central_db)
        )
        assert code == 2, (ttl, err)


def test_create_says_what_the_token_is_for_and_until_when(central_db: Path) -> None:
    code, out, err = run(
        "token", "create", "--village", VILLAGE, "--ttl", "2h", "--db", str(central_db)
    )
    assert code == 0
    token = out.strip()
    assert len(token) >= 40 and "\n" not in token  # stdout: the token alone, for scripts
    assert VILLAGE in err and "兴宁社区居委会" in err and "有效至" in err and "valid until" in err


def test_list_and_revoke(central_db: Path) -> None:
    _, tok, _ = run("token", "create", "--village", VILLAGE, "--ttl", "2h", "--db", str(central_db))
    code, out, _ = run("token", "list", "--db", str(central_db))
    assert code == 0 and VILLAGE in out and "未使用" in out and tok.strip() not in out
    token_id = next(line.split()[0] for line in out.splitlines() if VILLAGE in line)
    code, _, _ = run("token", "revoke", token_id, "--db", str(central_db))
    assert code == 0
    conn = open_db(central_db)
    with pytest.raises(Exception) as e:
        TokenStore(conn).redeem(tok.strip(), f"{VILLAGE}-a")
    assert getattr(e.value, "code", "") == "token_revoked"
    code, out, _ = run("token", "list", "--db", str(central_db))
    assert "已吊销" in out


def test_central_address_without_scheme_is_explained(tmp_path: Path) -> None:
    work = str(tmp_path / "n")
    assert run("keygen", "--node", f"{VILLAGE}-a", "--dir", work)[0] == 0
    code, out, err = run("enrol", "--central", "10.0.0.1:8080", "--token", "x" * 43, "--dir", work)
    said = "".join((out + err).split())
    assert code != 0 and "http://10.0.0.1:8080" in said and "网络" not in said


def test_token_commands_reach_the_configured_database(tmp_path: Path, db_target: Target) -> None:
    conn = open_db(db_target)
    import_registry(conn, "450102")
    conn.close()
    store = f'path = "{db_target}"' if isinstance(db_target, Path) else f'url = "{db_target}"'
    cfg = tmp_path / "central.toml"
    cfg.write_text(f"[store]\n{store}\n", encoding="utf-8")
    code, tok, _ = run("token", "create", "--village", VILLAGE, "--config", str(cfg))
    assert code == 0
    code, out, _ = run("token", "list", "--config", str(cfg))
    token_id = next(line.split()[0] for line in out.splitlines() if VILLAGE in line)
    assert run("token", "revoke", token_id, "--config", str(cfg))[0] == 0
    conn = open_db(db_target)
    try:
        with pytest.raises(TokenError) as e:
            TokenStore(conn).redeem(tok.strip(), f"{VILLAGE}-a")
        assert e.value.code == "token_revoked"
        actions = [a for (a,) in conn.fetchall("SELECT action FROM audit ORDER BY id")]
        assert actions == ["token_create", "token_revoke"]
    finally:
        conn.close()
