"""Real peers for the camera and terminal health tests: the gst-rtsp-server test camera
(tests/rtsp_camera.py, run by the system python3 with python3-gi), sipp as a SIP terminal, and
a small ONVIF device emulator (aiohttp SOAP)."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from aiohttp import web

from shilian.broker import free_port

HERE = Path(__file__).resolve().parent
#: The system interpreter: python3-gi is a Debian package, not in the project's venv.
SYSTEM_PYTHON = "/usr/bin/python3"
#: Start-up bound of a peer process (a gst pipeline builds in well under a second).
START_S = 20.0


class RtspCamera:
    """``tests/rtsp_camera.py`` on a free port; ``url(i)`` is mount ``/cam<i>``."""

    def __init__(
        self,
        pattern: str = "ball",
        *,
        user: str | None = None,
        password: str = "",
        mounts: int = 1,
        port: int | None = None,
        key_int: int | None = None,
    ) -> None:
        self.pattern = pattern
        self.key_int = key_int
        self.user = user
        self.password = password
        self.mounts = mounts
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def url(self, i: int = 0) -> str:
        return f"rtsp://127.0.0.1:{self.port}/cam{i}"

    def start(self) -> RtspCamera:
        cmd = [SYSTEM_PYTHON, str(HERE / "rtsp_camera.py"), "--port", str(self.port)]
        cmd += ["--pattern", self.pattern, "--mounts", str(self.mounts)]
        if self.user:
            cmd += ["--user", self.user, "--password", self.password]
        if self.key_int:
            cmd += ["--key-int", str(self.key_int)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith(b"READY"):
            err = self.proc.stderr.read() if self.proc.stderr else b""
            raise RuntimeError(f"test camera did not start: {line!r} {err[-2000:]!r}")
        return self

    def pause(self) -> None:
        """Stop the pictures, keep RTSP up (SIGUSR1: the valve drops every buffer)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGUSR1)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(START_S)

    def __enter__(self) -> RtspCamera:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


#: A sipp UAS scenario answering every OPTIONS with 503 (a terminal that is up but refuses).
SIPP_503 = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="options 503">
  <recv request="OPTIONS" crlf="true"/>
  <send>
    <![CDATA[
SIP/2.0 503 Service Unavailable
[last_Via:]
[last_From:]
[last_To:];tag=[pid]SIPpTag01[call_number]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0

    ]]>
  </send>
</scenario>
"""


class Sipp:
    """sipp as a UAS on a free UDP (or TCP) port; ``scenario`` None: the built-in ``uas``."""

    def __init__(self, tmp: Path, *, transport: str = "udp", scenario: str | None = None):
        self.port = free_port()
        cmd = ["sipp", "-i", "127.0.0.1", "-p", str(self.port), "-nostdin"]
        cmd += ["-t", "t1" if transport == "tcp" else "u1"]
        cmd += ["-mp", str(free_port()), "-cp", str(free_port())]
        if scenario is None:
            cmd += ["-sn", "uas", "-aa"]  # -aa: answer OPTIONS with 200 outside calls
        else:
            path = tmp / f"sipp-{self.port}.xml"
            path.write_text(scenario)
            cmd += ["-sf", str(path)]
        self.cmd = cmd
        self.log = tmp / f"sipp-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Sipp:
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                self.cmd, stdout=subprocess.DEVNULL, stderr=out, stdin=subprocess.DEVNULL
            )
        time.sleep(0.3)  # sipp has no readiness line; a probe retransmits meanwhile anyway
        assert self.proc.poll() is None, self.log.read_text()
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(START_S)

    def __exit__(self, *exc: object) -> None:
        self.stop()


def onvif_app(
    model: str, firmware: str, *, user: str, password: str, clock: Callable[[], float]
) -> web.Application:
    """An ONVIF device service answering GetSystemDateAndTime (camera clock ``clock()``) and
    GetDeviceInformation (only with a valid WS-UsernameToken PasswordDigest)."""
    import base64
    import hashlib
    import xml.etree.ElementTree as ET

    env = (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope" '
        'xmlns:tds="http://www.onvif.org/ver10/device/wsdl" '
        'xmlns:tt="http://www.onvif.org/ver10/schema"><s:Body>{}</s:Body></s:Envelope>'
    )

    def text(root: ET.Element, name: str) -> str:
        el = next((e for e in root.iter() if e.tag.endswith("}" + name)), None)
        return "" if el is None or el.text is None else el.text

    async def device_service(request: web.Request) -> web.Response:
        root = ET.fromstring(await request.read())
        if any(e.tag.endswith("}GetSystemDateAndTime") for e in root.iter()):
            t = datetime.fromtimestamp(clock(), UTC)
            body = (
                "<tds:GetSystemDateAndTimeResponse><tds:SystemDateAndTime>"
                "<tt:DateTimeType>NTP</tt:DateTimeType><tt:UTCDateTime>"
                f"<tt:Time><tt:Hour>{t.hour}</tt:Hour><tt:Minute>{t.minute}</tt:Minute>"
                f"<tt:Second>{t.second}</tt:Second></tt:Time>"
                f"<tt:Date><tt:Year>{t.year}</tt:Year><tt:Month>{t.month}</tt:Month>"
                f"<tt:Day>{t.day}</tt:Day></tt:Date>"
                "</tt:UTCDateTime></tds:SystemDateAndTime></tds:GetSystemDateAndTimeResponse>"
            )
            return web.Response(body=env.format(body), content_type="application/soap+xml")
        nonce = base64.b64decode(text(root, "Nonce") or "")
        created = text(root, "Created")
        want = base64.b64encode(
            hashlib.sha1(nonce + created.encode() + password.encode()).digest()
        ).decode()
        if text(root, "Username") != user or text(root, "Password") != want:
            fault = (
                "<s:Fault><s:Code><s:Value>s:Sender</s:Value></s:Code>"
                "<s:Reason><s:Text>Sender not Authorized</s:Text></s:Reason></s:Fault>"
            )
            return web.Response(
                status=400, body=env.format(fault), content_type="application/soap+xml"
            )
        body = (
            "<tds:GetDeviceInformationResponse><tds:Manufacturer>Acme</tds:Manufacturer>"
            f"<tds:Model>{model}</tds:Model><tds:FirmwareVersion>{firmware}"
            "</tds:FirmwareVersion><tds:SerialNumber>42</tds:SerialNumber>"
            "<tds:HardwareId>1</tds:HardwareId></tds:GetDeviceInformationResponse>"
        )
        return web.Response(body=env.format(body), content_type="application/soap+xml")

    app = web.Application()
    app.router.add_post("/onvif/device_service", device_service)
    return app
