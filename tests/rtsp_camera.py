"""A real RTSP test camera: Debian's gst-rtsp-server, run by the SYSTEM python3 (python3-gi).

    /usr/bin/python3 tests/rtsp_camera.py --port 8554 [--pattern ball] [--mounts 1]
        [--user admin --password secret] [--key-int FRAMES]

Serves H.264 (x264enc) over RTSP at ``rtsp://127.0.0.1:<port>/cam0`` .. ``/cam<mounts-1>``.
With ``--user``, every request needs Digest auth (GstRtspServer.RTSPAuth, digest method).
SIGUSR1 stops the pictures (a ``valve`` drops every buffer, the RTSP session stays up, as a
camera whose encoder hung); SIGUSR2 lets them flow again. Prints ``READY <port>`` once
listening. Not part of the product: it stands in for a village camera in tests and bench.
"""

from __future__ import annotations

import argparse
import signal
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtsp", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtsp, GstRtspServer  # noqa: E402

PIPELINE = (
    "( videotestsrc is-live=true pattern={pattern} ! "
    "video/x-raw,width={width},height={height},framerate={fps}/1 ! "
    "valve name=gate drop=false ! "
    "x264enc tune=zerolatency speed-preset=ultrafast key-int-max={key_int} ! "
    "rtph264pay name=pay0 pt=96 )"
)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--pattern", default="ball")
    ap.add_argument("--mounts", type=int, default=1)
    ap.add_argument("--width", type=int, default=320)
    ap.add_argument("--height", type=int, default=240)
    ap.add_argument("--fps", type=int, default=10)
    ap.add_argument("--user")
    ap.add_argument("--password", default="")
    ap.add_argument("--key-int", type=int, help="frames between key frames (default: fps)")
    args = ap.parse_args()

    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    gates: list[Gst.Element] = []

    def configured(
        _factory: GstRtspServer.RTSPMediaFactory, media: GstRtspServer.RTSPMedia
    ) -> None:
        gate = media.get_element().get_by_name("gate")
        if gate is not None:
            gates.append(gate)

    mounts = server.get_mount_points()
    for i in range(args.mounts):
        factory = GstRtspServer.RTSPMediaFactory()
        factory.set_launch(
            PIPELINE.format(
                pattern=args.pattern,
                width=args.width,
                height=args.height,
                fps=args.fps,
                key_int=args.key_int or args.fps,
            )
        )
        factory.set_shared(True)
        factory.connect("media-configure", configured)
        if args.user:
            role = "user"
            perms = GstRtspServer.RTSPPermissions()
            perms.add_permission_for_role(role, "media.factory.access", True)
            perms.add_permission_for_role(role, "media.factory.construct", True)
            factory.set_permissions(perms)
        mounts.add_factory(f"/cam{i}", factory)

    if args.user:
        auth = GstRtspServer.RTSPAuth()
        auth.set_supported_methods(GstRtsp.RTSPAuthMethod.DIGEST)
        token = GstRtspServer.RTSPToken()
        token.set_string("media.factory.role", "user")
        auth.add_digest(args.user, args.password, token)
        server.set_auth(auth)

    if server.attach(None) == 0:
        print("cannot listen", file=sys.stderr, flush=True)
        return 1
    loop = GLib.MainLoop()

    def gate(drop: bool) -> bool:
        for g in gates:
            g.set_property("drop", drop)
        return True

    GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGUSR1, gate, True)
    GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGUSR2, gate, False)
    GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGTERM, lambda: loop.quit() or False)
    print(f"READY {args.port}", flush=True)
    loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
