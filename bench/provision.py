"""Seconds from the start of ``shilian provision`` to a green commissioning check.

    python bench/provision.py

Set-up (not timed; the administrator's part, done once per city): a CA, central's client
certificate, the generated mosquitto TLS config and broker, central (``shilian central run``,
Nanning registry, holding the CA) on free loopback ports.
Timed (the technician's part, every command a real ``python -m shilian`` process as typed on
site, excluding typing): ``provision village search``, ``provision token create`` (the
administrator's one command per visit), ``provision node`` (keygen → enrol → write-config),
starting the edge agent (default config: health every 30 s, first report at connect), and
``provision check``. Prints one JSON line: ``seconds`` (target ≤ 60) and per-step figures.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from shilian.broker import free_port
from tests.processes import Proc
from tests.test_prov_flow import make_site


def shilian(*args: str) -> str:
    r = subprocess.run(
        [sys.executable, "-m", "shilian", "provision", *args],
        capture_output=True,
        text=True,
        check=False,
    )
    if r.returncode != 0:
        raise SystemExit(f"shilian provision {args[0]} failed:\n{r.stdout}\n{r.stderr}")
    return r.stdout


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="shilian-bench-prov-") as tmp:
        gen = make_site(Path(tmp))
        site = next(gen)
        edge: Proc | None = None
        steps: dict[str, float] = {}
        try:
            t0 = time.perf_counter()
            out = shilian("village", "search", "兴宁", "三塘", "--limit", "1")
            code = next(w for w in out.split() if w.isdigit() and len(w) == 12)
            node_id = f"{code}-bench"
            steps["search_s"] = time.perf_counter() - t0
            t = time.perf_counter()
            token = shilian(
                "token", "create", "--node", node_id, "--ttl", "1h", "--db", str(site.central.db)
            ).strip()
            steps["token_s"] = time.perf_counter() - t
            work = Path(tmp) / "node"
            t = time.perf_counter()
            shilian(
                "node",
                *("--node", node_id, "--central", site.central.api, "--token", token),
                *("--dir", str(work), "--outbox", str(work / "outbox.sqlite3")),
                *("--socket", str(work / "edge.sock"), "--metrics-port", str(free_port())),
                "--skip-check",
            )
            steps["keygen_enrol_config_s"] = time.perf_counter() - t
            t = time.perf_counter()
            edge = Proc(
                [
                    sys.executable,
                    "-m",
                    "shilian",
                    "edge",
                    "run",
                    "--config",
                    str(work / "edge.toml"),
                ],
                work / "edge.log",
            )
            edge.start()
            shilian("check", "--dir", str(work))
            steps["agent_and_check_s"] = time.perf_counter() - t
            seconds = time.perf_counter() - t0
            report = json.loads((work / "report.json").read_text("utf-8"))
            assert report["ok"], report
        finally:
            if edge is not None:
                edge.close()
            gen.close()
    print(
        json.dumps(
            {
                "seconds": round(seconds, 2),
                **{k: round(v, 2) for k, v in steps.items()},
                "check_steps_s": {s["step"]: round(s["seconds"], 2) for s in report["steps"]},
            }
        )
    )


if __name__ == "__main__":
    main()
