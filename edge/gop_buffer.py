"""The packets of a camera's current group of pictures, so that a viewer joining mid-stream
starts at once (docs/meetings.md "Video").

A call passes the camera's H.264 through without decoding, so it cannot ask the camera for a
key frame (a PLI is not honoured): a viewer that starts with the live packets sees nothing
until the camera's next key frame, up to its key-frame interval later. Kept here: the latest
key frame and every packet after it, which is exactly what a decoder needs to show the current
picture. Pure: packets are opaque items with a size and a key-frame flag.
"""

from __future__ import annotations

from typing import Generic, TypeVar

T = TypeVar("T")

#: Default bound (bytes): one second of a 720p/1080p camera at up to ~16 Mbit/s. A camera
#: whose key frames are further apart than this holds overflows the buffer; the viewer then
#: waits for the next key frame, as without a buffer.
MAX_GOP_BYTES = 2_000_000


class GopBuffer(Generic[T]):
    """The latest key frame and the packets since, at most ``max_bytes`` in all.

    ``push`` every packet in order; ``packets()`` is what a new viewer is sent first (empty
    until a key frame came, and after an overflow until the next one)."""

    def __init__(self, max_bytes: int = MAX_GOP_BYTES) -> None:
        if max_bytes <= 0:
            raise ValueError("max_bytes must be positive")
        self.max_bytes = max_bytes
        self._items: list[T] = []
        self._bytes = 0
        #: Groups given up because they outgrew ``max_bytes``.
        self.overflows = 0

    def push(self, item: T, size: int, key: bool) -> None:
        if key:
            self._items.clear()
            self._bytes = 0
        elif not self._items:
            return  # no key frame to decode it against: useless to a new viewer
        if self._bytes + size > self.max_bytes:
            if self._items:
                self.overflows += 1
            self._items.clear()
            self._bytes = 0
            return
        self._items.append(item)
        self._bytes += size

    def packets(self) -> list[T]:
        """A copy: the key frame first, then every packet after it, in order."""
        return list(self._items)

    def clear(self) -> None:
        self._items.clear()
        self._bytes = 0

    @property
    def nbytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._items)
