"""Key frames on demand from the cameras' open sessions (snapshots on alarm), pure asyncio.

A caller of :meth:`KeyframeWaiters.keyframe` waits for a camera's next whole key frame; the
camera's session loop (edge.camera_source) asks its H.264 watcher for one while anybody waits
(:meth:`wanted`) and hands it over with :meth:`give`. Callers waiting at the same time share
the key frame, and :meth:`jpeg` shares its encode: a burst of alarms costs one decode and one
JPEG per camera, not one per alarm.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import Executor

from edge.jpeg import Jpeg


class KeyframeWaiters:
    def __init__(self) -> None:
        self._waiting: dict[str, list[asyncio.Future[bytes]]] = {}
        #: Per camera, the last key frame encoded and its JPEG (shared by its callers).
        self._jpegs: dict[str, tuple[bytes, int, asyncio.Future[Jpeg]]] = {}

    def wanted(self, camera_id: str) -> bool:
        return bool(self._waiting.get(camera_id))

    def give(self, camera_id: str, sample: bytes) -> None:
        for fut in self._waiting.pop(camera_id, []):
            if not fut.done():
                fut.set_result(sample)

    async def keyframe(self, camera_id: str, timeout_s: float) -> bytes:
        """The camera's next key frame (Annex B, with SPS/PPS); ``TimeoutError`` if none
        arrives within ``timeout_s`` (not playing, stalled, slow)."""
        fut: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(camera_id, []).append(fut)
        try:
            async with asyncio.timeout(timeout_s):
                return await fut
        finally:
            waiting = self._waiting.get(camera_id, [])
            if fut in waiting:
                waiting.remove(fut)

    async def jpeg(
        self, camera_id: str, timeout_s: float, max_bytes: int, decoder: Executor
    ) -> Jpeg:
        """The next key frame as a JPEG of at most ``max_bytes`` (edge.jpeg), encoded on
        ``decoder``; ``TimeoutError`` or ``edge.picture.PictureError``."""
        sample = await self.keyframe(camera_id, timeout_s)
        made = self._jpegs.get(camera_id)
        if made is None or made[0] is not sample or made[1] != max_bytes:
            loop = asyncio.get_running_loop()
            job = asyncio.ensure_future(loop.run_in_executor(decoder, _encode, sample, max_bytes))
            made = self._jpegs[camera_id] = (sample, max_bytes, job)
        return await asyncio.shield(made[2])


def _encode(sample: bytes, max_bytes: int) -> Jpeg:
    from edge.jpeg import keyframe_jpeg

    return keyframe_jpeg(sample, max_bytes)
