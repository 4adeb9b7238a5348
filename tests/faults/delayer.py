"""Added latency on a link without ``tc netem``: an nftables rule hands each packet to an NFQUEUE,
and this process gives the kernel its verdict (accept) only once the packet is ``delay`` old.

A minimal NFQUEUE client over netlink (``nfnetlink_queue``, linux/netfilter/nfnetlink_queue.h),
so the tests need no compiled binding. Packets are released in arrival order (the delay is the
same for all), so the link reorders nothing; only metadata is copied from the kernel, never
payloads. It works in the network namespace it is started in (``ip netns exec``), which is the
namespace whose nftables rule feeds the queue.

    python -m tests.faults.delayer --queue 7 --delay-ms 300

Prints ``ready`` on stdout once bound; runs until SIGTERM.
"""

from __future__ import annotations

import argparse
import collections
import errno
import select
import signal
import socket
import struct
import sys
import time

NETLINK_NETFILTER = 12
NFNL_SUBSYS_QUEUE = 3
NFQNL_MSG_PACKET = 0
NFQNL_MSG_VERDICT = 1
NFQNL_MSG_CONFIG = 2
NFQA_PACKET_HDR = 1
NFQA_VERDICT_HDR = 2
NFQA_CFG_CMD = 1
NFQA_CFG_PARAMS = 2
NFQA_CFG_QUEUE_MAXLEN = 3
NFQNL_CFG_CMD_BIND = 1
NFQNL_COPY_META = 1
NLM_F_REQUEST = 1
NLM_F_ACK = 4
NLMSG_ERROR = 2
NF_ACCEPT = 1
_NLMSGHDR = struct.Struct("=IHHII")
_NFGENMSG = struct.Struct("=BBH")

#: Packets the kernel holds for us at most: 300 ms of a busy village link (a 4G uplink moves a
#: few hundred packets a second); beyond it the kernel drops, as a full modem buffer would.
QUEUE_MAXLEN = 8_192
#: Socket receive buffer: bursts of packet notifications must not overflow it (ENOBUFS).
RCVBUF = 8 << 20


def _attr(kind: int, value: bytes) -> bytes:
    n = 4 + len(value)
    return struct.pack("=HH", n, kind) + value + b"\0" * ((4 - n % 4) % 4)


def _message(msg: int, flags: int, queue: int, attrs: bytes, seq: int = 0) -> bytes:
    body = _NFGENMSG.pack(socket.AF_UNSPEC, 0, socket.htons(queue)) + attrs
    typ = (NFNL_SUBSYS_QUEUE << 8) | msg
    return _NLMSGHDR.pack(_NLMSGHDR.size + len(body), typ, flags, seq, 0) + body


def _packet_ids(data: bytes) -> list[int]:
    """Packet ids of the NFQNL_MSG_PACKET messages in one netlink datagram."""
    ids: list[int] = []
    off = 0
    while off + _NLMSGHDR.size <= len(data):
        length, typ, _, _, _ = _NLMSGHDR.unpack_from(data, off)
        if length < _NLMSGHDR.size:
            break
        if typ == NLMSG_ERROR:
            (err,) = struct.unpack_from("=i", data, off + _NLMSGHDR.size)
            if err:
                raise OSError(-err, f"nfqueue: {errno.errorcode.get(-err, err)}")
        elif typ == (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET:
            a = off + _NLMSGHDR.size + _NFGENMSG.size
            end = off + length
            while a + 4 <= end:
                alen, akind = struct.unpack_from("=HH", data, a)
                if alen < 4:
                    break
                if akind & 0x7FFF == NFQA_PACKET_HDR:
                    ids.append(struct.unpack_from("!I", data, a + 4)[0])
                a += (alen + 3) & ~3
        off += (length + 3) & ~3
    return ids


class Delayer:
    """One bound queue; :meth:`run` releases each packet ``delay_s`` after it arrived."""

    def __init__(self, queue: int, delay_s: float) -> None:
        self.queue, self.delay_s = queue, delay_s
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
        self.sock.bind((0, 0))
        self._config(_attr(NFQA_CFG_CMD, struct.pack("!BxH", NFQNL_CFG_CMD_BIND, socket.AF_INET)))
        self._config(
            _attr(NFQA_CFG_PARAMS, struct.pack("!IB", 0, NFQNL_COPY_META))
            + _attr(NFQA_CFG_QUEUE_MAXLEN, struct.pack("!I", QUEUE_MAXLEN))
        )
        self.held: collections.deque[tuple[float, int]] = collections.deque()
        self.stop = False

    def _config(self, attrs: bytes) -> None:
        self.sock.send(_message(NFQNL_MSG_CONFIG, NLM_F_REQUEST | NLM_F_ACK, self.queue, attrs))
        _packet_ids(self.sock.recv(65536))  # the ACK; raises on a refusal

    def _accept(self, packet_id: int) -> None:
        attrs = _attr(NFQA_VERDICT_HDR, struct.pack("!II", NF_ACCEPT, packet_id))
        self.sock.send(_message(NFQNL_MSG_VERDICT, NLM_F_REQUEST, self.queue, attrs))

    def run(self) -> None:
        while not self.stop:
            now = time.monotonic()
            while self.held and self.held[0][0] <= now:
                self._accept(self.held.popleft()[1])
            timeout = self.held[0][0] - now if self.held else 0.5
            try:
                readable, _, _ = select.select([self.sock], [], [], max(0.0, timeout))
            except InterruptedError:
                continue
            if readable:
                try:
                    data = self.sock.recv(1 << 16)
                except OSError as e:
                    # notifications overflowed our buffer: those packets wait in the kernel's
                    # queue for a verdict that never comes, as a modem drops what it cannot hold
                    if e.errno != errno.ENOBUFS:
                        raise
                    sys.stderr.write("delayer: ENOBUFS, notifications lost\n")
                    continue
                due = time.monotonic() + self.delay_s
                self.held.extend((due, i) for i in _packet_ids(data))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--queue", type=int, required=True)
    p.add_argument("--delay-ms", type=float, required=True)
    args = p.parse_args()
    d = Delayer(args.queue, args.delay_ms / 1000)

    def stop(*_: object) -> None:
        d.stop = True

    signal.signal(signal.SIGTERM, stop)
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    d.run()


if __name__ == "__main__":
    main()
