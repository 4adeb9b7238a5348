"""systemd's ``sd_notify`` protocol in pure Python (no libsystemd binding to load on the box).

The service manager passes ``$NOTIFY_SOCKET`` (a path, or ``@name`` for an abstract socket)
and, with ``WatchdogSec=``, ``$WATCHDOG_USEC``. A notification is one datagram of
``KEY=VALUE`` lines (sd_notify(3)). Without ``NOTIFY_SOCKET`` every call is a no-op, so the
agent runs unchanged outside systemd.

The watchdog ping is sent from a task on the agent's event loop (:meth:`Notifier.watchdog`):
if the loop hangs, the pings stop and systemd restarts the service after ``WatchdogSec``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Callable, Mapping

log = logging.getLogger("shilian.edge.sdnotify")

#: Largest notification we send (the STATUS text is short); systemd accepts far more.
MAX_MESSAGE_BYTES = 4096
#: Ping at this fraction of the watchdog interval (sd_watchdog_enabled(3) advises half).
WATCHDOG_FRACTION = 0.5


def socket_address(value: str) -> str | bytes | None:
    """``$NOTIFY_SOCKET`` as a ``socket.connect`` address: ``@name`` is Linux's abstract
    namespace (a leading NUL byte); a path stays a path; anything else is unusable."""
    if value.startswith("@") and len(value) > 1:
        return b"\0" + value[1:].encode()
    if value.startswith("/"):
        return value
    return None


def watchdog_interval(env: Mapping[str, str], pid: int) -> float | None:
    """Seconds between watchdog pings, or None when the watchdog is not enabled for ``pid``
    (``WATCHDOG_PID``, when set, names the process meant to ping)."""
    usec = env.get("WATCHDOG_USEC", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    wpid = env.get("WATCHDOG_PID", "")
    if wpid and wpid != str(pid):
        return None
    return int(usec) / 1e6 * WATCHDOG_FRACTION


def message(**fields: str | int) -> bytes:
    """One notification: ``message(READY=1, STATUS="…")`` → ``b"READY=1\\nSTATUS=…"``."""
    lines = []
    for k, v in fields.items():
        text = str(v).replace("\n", " ")
        lines.append(f"{k}={text}")
    data = "\n".join(lines).encode()
    if len(data) > MAX_MESSAGE_BYTES:
        raise ValueError(f"notification over {MAX_MESSAGE_BYTES} bytes")
    return data


class Notifier:
    """Sends notifications to systemd; every method is a no-op when not under systemd.

    A send failure (the manager went away) is logged once and otherwise ignored: the agent's
    work never depends on the supervisor hearing it.
    """

    def __init__(self, env: Mapping[str, str] | None = None, pid: int | None = None) -> None:
        e = os.environ if env is None else env
        self.address = socket_address(e.get("NOTIFY_SOCKET", ""))
        self.interval = watchdog_interval(e, os.getpid() if pid is None else pid)
        self._sock: socket.socket | None = None
        self._failed = False
        if self.address is not None:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.setblocking(False)

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    def notify(self, **fields: str | int) -> bool:
        """Send one notification; True if it was handed to the socket."""
        if self._sock is None or self.address is None:
            return False
        try:
            self._sock.sendto(message(**fields), self.address)
        except OSError as e:
            if not self._failed:
                log.warning("sd_notify to %r failed: %s", self.address, e)
                self._failed = True
            return False
        return True

    def ready(self, status: str) -> bool:
        return self.notify(READY=1, STATUS=status)

    def stopping(self, status: str) -> bool:
        return self.notify(STOPPING=1, STATUS=status)

    def status(self, status: str) -> bool:
        return self.notify(STATUS=status)

    async def watchdog(self, status: Callable[[], str] | None = None) -> None:
        """Ping ``WATCHDOG=1`` every half watchdog interval from the event loop, with a STATUS
        line when ``status`` is given and the text changed. Returns at once without a watchdog."""
        if self.interval is None or self._sock is None:
            return
        last = ""
        while True:
            fields: dict[str, str | int] = {"WATCHDOG": 1}
            if status is not None and (now := status()) != last:
                fields["STATUS"] = last = now
            self.notify(**fields)
            await asyncio.sleep(self.interval)

    def close(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
            self._sock = None
