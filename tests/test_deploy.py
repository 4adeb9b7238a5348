"""deploy/install.sh run for real into a temporary root (``--root``, ``--no-systemctl``): the user
is added to the temporary root's own /etc/passwd (``useradd --prefix``), never to this machine's;
the tree, modes and owners are checked; a second run changes nothing it must keep. The unit file
is checked with ``systemd-analyze verify`` and the script with ``shellcheck``."""

from __future__ import annotations

import shutil
import stat
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.peers import program

REPO = Path(__file__).resolve().parents[1]
INSTALL = REPO / "deploy" / "install.sh"
UNIT = REPO / "deploy" / "shilian-edge.service"

CONFIG = 'node_id = "450102001001-a"\n[broker]\nhost = "mqtt.example.gov.cn"\nport = 8883\n'


@dataclass
class Installed:
    root: Path
    uid: int
    gid: int
    first: subprocess.CompletedProcess[str]
    second: subprocess.CompletedProcess[str]


def seed_root(root: Path) -> None:
    """A minimal /etc of a fresh Debian: root, daemon, nobody; no dialout group yet."""
    etc = root / "etc"
    etc.mkdir(parents=True)
    (etc / "passwd").write_text(
        "root:x:0:0:root:/root:/bin/bash\nnobody:x:65534:65534::/nonexistent:/usr/sbin/nologin\n"
    )
    (etc / "group").write_text("root:x:0:\nnogroup:x:65534:\n")
    (etc / "shadow").write_text("root:*:19000:0:99999:7:::\nnobody:*:19000:0:99999:7:::\n")
    (etc / "gshadow").write_text("root:*::\nnogroup:*::\n")
    for f in ("shadow", "gshadow"):
        (etc / f).chmod(0o640)


def run_install(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(INSTALL), *args], capture_output=True, text=True, timeout=600
    )


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    tmp = tmp_path_factory.mktemp("deploy")
    root = tmp / "root"
    seed_root(root)
    conf = tmp / "edge.toml"
    conf.write_text(CONFIG)
    args = ("--root", str(root), "--no-systemctl", "--source", str(REPO), "--config", str(conf))
    first = run_install(*args)
    assert first.returncode == 0, first.stdout + first.stderr
    # What a running node has by then: a key and a changed config, neither may be touched.
    node = root / "etc/shilian/node"
    (node / "node.key").write_text("KEY")
    (node / "edge.toml").write_text(CONFIG + "# edited on site\n")
    second = run_install(*args)
    assert second.returncode == 0, second.stdout + second.stderr
    line = next(
        x for x in (root / "etc/passwd").read_text().splitlines() if x.startswith("shilian:")
    )
    f = line.split(":")
    yield Installed(root, int(f[2]), int(f[3]), first, second)
    shutil.rmtree(tmp, ignore_errors=True)


def mode_owner(p: Path) -> tuple[int, int, int]:
    st = p.lstat()
    return stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid


def test_user_is_a_system_user_in_dialout_created_once(installed: Installed) -> None:
    passwd = (installed.root / "etc/passwd").read_text().splitlines()
    group = (installed.root / "etc/group").read_text().splitlines()
    mine = [x for x in passwd if x.startswith("shilian:")]
    assert len(mine) == 1  # the second run did not add another
    f = mine[0].split(":")
    assert int(f[2]) < 1000 and f[6] == "/usr/sbin/nologin" and f[5] == "/var/lib/shilian"
    dialout = [x for x in group if x.startswith("dialout:")]
    assert len(dialout) == 1 and dialout[0].split(":")[3].split(",") == ["shilian"]
    assert "useradd" in installed.first.stdout and "useradd" not in installed.second.stdout


def test_directories_have_their_modes_and_owners(installed: Installed) -> None:
    r, uid, gid = installed.root, installed.uid, installed.gid
    assert mode_owner(r / "etc/shilian") == (0o750, 0, gid)
    assert mode_owner(r / "etc/shilian/node") == (0o700, uid, gid)
    assert mode_owner(r / "var/lib/shilian") == (0o750, uid, gid)
    assert mode_owner(r / "var/log/shilian") == (0o750, uid, gid)
    assert mode_owner(r / "opt/shilian") == (0o755, 0, 0)
    assert mode_owner(r / "etc/systemd/system/shilian-edge.service") == (0o644, 0, 0)
    assert mode_owner(r / "etc/systemd/journald.conf.d/shilian.conf") == (0o644, 0, 0)
    link = r / "etc/systemd/system/multi-user.target.wants/shilian-edge.service"
    assert str(link.readlink()) == "/etc/systemd/system/shilian-edge.service"


def test_config_and_key_survive_a_second_run(installed: Installed) -> None:
    node = installed.root / "etc/shilian/node"
    assert (node / "edge.toml").read_text().endswith("# edited on site\n")
    assert (node / "node.key").read_text() == "KEY"
    assert mode_owner(node / "edge.toml") == (0o600, installed.uid, installed.gid)


def test_the_venv_runs_the_installed_package(installed: Installed) -> None:
    shilian = installed.root / "opt/shilian/venv/bin/shilian"
    r = subprocess.run(
        [str(shilian), "edge", "check-config", str(installed.root / "etc/shilian/node/edge.toml")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    assert "450102001001-a" in r.stdout and "mqtt.example.gov.cn:8883" in r.stdout
    doc = installed.root / "opt/shilian/doc/install.md"
    assert doc.exists()  # the unit's Documentation= points here


def test_unit_file_verifies(installed: Installed, tmp_path: Path) -> None:
    """``systemd-analyze verify`` checks every directive and that ExecStart is executable: the
    unit is verified with its paths pointed at the venv this test installed."""
    program("systemd-analyze", "apt-get install systemd")
    text = (installed.root / "etc/systemd/system/shilian-edge.service").read_text()
    assert text == UNIT.read_text()  # default user: the file as shipped
    local = tmp_path / "shilian-edge.service"
    local.write_text(text.replace("/opt/shilian/", f"{installed.root}/opt/shilian/"))
    r = subprocess.run(["systemd-analyze", "verify", str(local)], capture_output=True, text=True)
    assert r.returncode == 0 and r.stderr.strip() == "", r.stderr
    # The check can fail: a bad value is reported.
    local.write_text(local.read_text().replace("WatchdogSec=30", "WatchdogSec=soon"))
    r = subprocess.run(["systemd-analyze", "verify", str(local)], capture_output=True, text=True)
    assert "WatchdogSec" in r.stderr or "soon" in r.stderr


def test_unit_has_the_promised_settings() -> None:
    s = dict(
        line.split("=", 1)
        for line in UNIT.read_text().splitlines()
        if "=" in line and not line.startswith("#")
    )
    assert s["Type"] == "notify" and s["NotifyAccess"] == "main"
    assert s["Restart"] == "on-failure" and int(s["WatchdogSec"]) > 0
    assert s["User"] == "shilian" and s["SupplementaryGroups"] == "dialout"
    assert s["ProtectSystem"] == "strict" and s["NoNewPrivileges"] == "yes"
    assert s["KillSignal"] == "SIGTERM" and int(s["TimeoutStopSec"]) >= 5 + 10
    assert s["ExecStart"].endswith("edge run --config /etc/shilian/node/edge.toml")


def test_install_script_passes_shellcheck() -> None:
    shellcheck = program("shellcheck", "apt-get install shellcheck")
    r = subprocess.run([shellcheck, str(INSTALL)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout


def test_bad_arguments_are_explained(tmp_path: Path) -> None:
    r = run_install("--frobnicate")
    assert r.returncode == 2 and "unknown argument" in r.stderr
    r = run_install("--root", str(tmp_path), "--no-systemctl")
    assert r.returncode == 2 and "--source" in r.stderr
    r = run_install("--root", str(tmp_path), "--no-systemctl", "--source", str(REPO))
    assert r.returncode == 2 and "passwd" in r.stderr  # an empty root: nothing was created
    assert list(tmp_path.iterdir()) == []
