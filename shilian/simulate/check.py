"""Does central show what the scenario says? :class:`Verdict` is pure: it takes central's
figures sampled at given times and keeps every mismatch with a phase's expectation.
:class:`CentralCoverage` is the thin HTTP shell that reads the figures from central's API
(``GET /api/v1/coverage/{code}``, docs/api.md)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import aiohttp

from shilian.simulate.plan import Phase

#: Seconds an API call may take before the sample is counted as missing (central answers
#: coverage from memory in well under a millisecond; a loaded box gets slack).
API_TIMEOUT_S = 10.0


@dataclass(frozen=True, slots=True)
class Mismatch:
    at: float
    phase: str
    code: str
    expected: tuple[int, int]
    got: int | None

    def describe(self) -> str:
        lo, hi = self.expected
        want = str(lo) if lo == hi else f"{lo}–{hi}"
        got = "无数据 / missing" if self.got is None else str(self.got)
        return (
            f"t={self.at:.1f}s {self.phase} {self.code}: 应为 / expected {want} 个村, "
            f"中心显示 / central shows {got}"
        )


@dataclass
class PhaseResult:
    phase: Phase
    samples: int = 0
    mismatches: list[Mismatch] = field(default_factory=list)
    lowest: dict[str, int] = field(default_factory=dict)


class Verdict:
    """Samples in, mismatches out. A phase passes when it was sampled at least once after its
    settle time and every such sample matched for every unit."""

    def __init__(self, phases: list[Phase]) -> None:
        self.results = [PhaseResult(p) for p in phases]

    def add(self, at: float, figures: dict[str, int]) -> list[Mismatch]:
        """Record central's ``covered`` per unit code, read ``at`` seconds after the start."""
        found: list[Mismatch] = []
        for r in self.results:
            p = r.phase
            if not p.start + p.settle <= at <= p.end:
                continue
            r.samples += 1
            bad = []
            for code, (lo, hi) in p.expect.items():
                got = figures.get(code)
                if got is not None:
                    r.lowest[code] = min(got, r.lowest.get(code, got))
                if got is None or not lo <= got <= hi:
                    bad.append(Mismatch(at, p.name, code, (lo, hi), got))
            r.mismatches.extend(bad)
            found.extend(bad)
        return found

    @property
    def ok(self) -> bool:
        return all(r.samples and not r.mismatches for r in self.results)

    def report(self) -> list[str]:
        """One line per phase, then the first mismatches of each (zh / en)."""
        lines = []
        for r in self.results:
            status = "通过 / pass" if r.samples and not r.mismatches else "不符 / FAIL"
            lines.append(
                f"{r.phase.name}: {status} — {r.samples} 次采样 / samples, "
                f"{len(r.mismatches)} 处不符 / mismatches"
            )
            lines += ["  " + m.describe() for m in r.mismatches[:10]]
            if not r.samples:
                lines.append("  未采样：请延长阶段 / never sampled: lengthen the phase")
        return lines


class CentralCoverage:
    """Reads central's coverage of one unit and its children; logs in with a user and password,
    or uses a session token."""

    def __init__(
        self, base_url: str, *, token: str | None = None, user: str = "", password: str = ""
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._token = token
        self._user, self._password = user, password
        self._http: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> CentralCoverage:
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=API_TIMEOUT_S))
        if self._token is None and self._user:
            body = {"user": self._user, "password": self._password}
            async with self._http.post(f"{self.base_url}/api/v1/login", json=body) as r:
                if r.status != 200:
                    raise PermissionError(
                        f"登录中心失败 / login to central failed ({r.status}): {await r.text()}"
                    )
                self._token = str((await r.json())["token"])
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._http is not None:
            await self._http.close()

    async def get(self, path: str) -> Any:
        assert self._http is not None, "use as an async context manager"
        headers = {"Authorization": f"Bearer {self._token}"} if self._token else {}
        async with self._http.get(f"{self.base_url}{path}", headers=headers) as r:
            r.raise_for_status()
            return await r.json()

    async def text(self, path: str) -> str:
        assert self._http is not None, "use as an async context manager"
        async with self._http.get(f"{self.base_url}{path}") as r:
            r.raise_for_status()
            return await r.text()

    async def figures(self, code: str) -> dict[str, int]:
        """``covered`` of the unit and each child, by code."""
        body = await self.get(f"/api/v1/coverage/{code}")
        out = {body["unit"]["code"]: int(body["unit"]["covered"])}
        out.update({c["code"]: int(c["covered"]) for c in body["children"]})
        return out
