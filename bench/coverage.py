"""Coverage query latency through the HTTP API, and registry load times.

    python bench/coverage.py [--requests 2000]

Nanning's registry (1,856 villages), one node in every village (76.88% online, the rest
offline), the real aiohttp app on a free loopback port, and an aiohttp client in the same
process (so each figure includes the client's own cost: an upper bound for the server).
Per path: a warm-up, then N sequential GETs of /api/v1/coverage/4501 (the city and its 12
counties) and of /api/v1/coverage/450102 (a county and its townships). Then the whole country's
registry is loaded from the package (620,573 villages) and a CoverageIndex built over it.
Prints one JSON line: p50_ms, p99_ms (both paths together; target p99 <= 10 ms), per-path
figures, and the load times.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import prometheus_client
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from central.accounts import AccountStore, Role
from central.app import make_app
from central.coverage import CoverageIndex
from central.http import ApiContext
from registry import Registry

ONLINE_SHARE = 0.7688  # the 2022 report's figure for Nanning
WARMUP = 200
PATHS = ("/api/v1/coverage/4501", "/api/v1/coverage/450102")


def _quantile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _measure(requests: int) -> dict[str, object]:
    registry = Registry.from_package("4501")
    index = CoverageIndex(registry)
    villages = list(registry.villages())
    online_until = round(len(villages) * ONLINE_SHARE)
    for i, v in enumerate(villages):
        index.set_node(f"{v.code}-n1", online=i < online_until)
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "central.db"
        sqlite3.connect(db).close()
        accounts = AccountStore(db)  # the API needs a login (central.auth)
        accounts.add("bench", Role.viewer, "", "bench-password", time.time())
        accounts.close()
        ctx = ApiContext(
            db, registry, index, prometheus_client.CollectorRegistry(), None, clock=time.time
        )
        runner = web.AppRunner(make_app(ctx), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        per_path: dict[str, list[float]] = {}
        try:
            async with aiohttp.ClientSession(
                f"http://127.0.0.1:{port}", cookie_jar=aiohttp.CookieJar(unsafe=True)
            ) as http:
                await http.post(
                    "/api/v1/login", json={"user": "bench", "password": "bench-password"}
                )
                for path in PATHS:
                    for _ in range(WARMUP):
                        async with http.get(path) as r:
                            await r.read()
                    samples: list[float] = []
                    for _ in range(requests):
                        t0 = time.perf_counter()
                        async with http.get(path) as r:
                            body = await r.read()
                        samples.append((time.perf_counter() - t0) * 1000)
                        assert r.status == 200, body
                    per_path[path] = samples
                async with http.get(PATHS[0]) as r:
                    check = await r.json()
        finally:
            await runner.cleanup()
    everything = [s for samples in per_path.values() for s in samples]
    result: dict[str, object] = {
        "requests_per_path": requests,
        "p50_ms": round(statistics.median(everything), 3),
        "p99_ms": round(_quantile(everything, 0.99), 3),
        "max_ms": round(max(everything), 3),
        "city_covered": check["unit"]["covered"],
        "city_villages": check["unit"]["villages"],
    }
    for path, samples in per_path.items():
        key = path.rsplit("/", 1)[1]
        result[f"p50_ms_{key}"] = round(statistics.median(samples), 3)
        result[f"p99_ms_{key}"] = round(_quantile(samples, 0.99), 3)
    return result


def _country() -> dict[str, object]:
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    registry = Registry.from_package("")
    t1 = time.perf_counter()
    CoverageIndex(registry)
    t2 = time.perf_counter()
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "country_registry_load_s": round(t1 - t0, 2),
        "country_coverage_index_build_s": round(t2 - t1, 2),
        "country_units": len(registry),
        "country_rss_growth_mb": round((rss1 - rss0) / 1024, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000, help="sequential GETs per path")
    args = parser.parse_args()
    result = asyncio.run(_measure(args.requests))
    result.update(_country())
    print(json.dumps(result))


if __name__ == "__main__":
    main()
