"""A real Mosquitto broker for the telemetry tests (Debian package ``mosquitto``; .ci/run installs it).

Started on a free loopback port with a config generated in the test's tmp
folder: anonymous, with a password file (``mosquitto_passwd``), or TLS with a
CA and server certificate made for the test by the ``openssl`` command.
"""

from __future__ import annotations

import asyncio
import getpass
import json
import shutil
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Broker:
    folder: Path
    port: int
    config: Path
    tls: bool = False
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def url(self, prefix: str = "vlt", user: str = "") -> str:
        scheme = "mqtts" if self.tls else "mqtt"
        return f"{scheme}://{user + '@' if user else ''}127.0.0.1:{self.port}/{prefix}"

    def start(self) -> None:
        with (self.folder / "mosquitto.log").open("ab") as log:
            self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.config)], stdout=log, stderr=log)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited: {(self.folder / 'mosquitto.log').read_text()}")
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.02)
        raise RuntimeError("mosquitto did not start listening within 10 s")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


def make_broker(folder: Path, *, passwords: dict[str, str] | None = None, tls: bool = False) -> Broker:
    if not Path(MOSQUITTO).exists():
        pytest.skip("mosquitto is not installed (Debian: apt-get install mosquitto)")
    folder.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    lines = [f"listener {port} 127.0.0.1", "persistence false", "log_dest stderr", "log_type error"]
    # Run as root, mosquitto would switch to user mosquitto, who cannot read pytest's tmp folders.
    lines.append(f"user {getpass.getuser()}")
    if passwords:
        pwfile = folder / "passwords"
        pwfile.touch(mode=0o600)
        for user, password in passwords.items():
            subprocess.run(["mosquitto_passwd", "-b", str(pwfile), user, password], check=True)
        lines += ["allow_anonymous false", f"password_file {pwfile}"]
    else:
        lines.append("allow_anonymous true")
    if tls:
        ca, cert, key = make_certificates(folder)
        lines += [f"cafile {ca}", f"certfile {cert}", f"keyfile {key}"]
    config = folder / "mosquitto.conf"
    config.write_text("\n".join(lines) + "\n")
    broker = Broker(folder, port, config, tls)
    broker.start()
    return broker


def make_certificates(folder: Path) -> tuple[Path, Path, Path]:
    """A self-signed CA and a server certificate it signed, for 127.0.0.1 / localhost."""

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=folder)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=vlt test CA",
            "-keyout", "ca.key", "-out", "ca.crt")  # fmt: skip
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost", "-keyout", "server.key",
            "-out", "server.csr")  # fmt: skip
    (folder / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
            "-days", "2", "-extfile", "san.ext", "-out", "server.crt")  # fmt: skip
    return folder / "ca.crt", folder / "server.crt", folder / "server.key"


class Listener:
    """Every message under a topic filter, raw, collected on a thread while the block runs
    (a plain aiomqtt client, so what the code under test publishes is read independently)."""

    def __init__(self, broker: Broker, pattern: str = "vlt/#", **client: object) -> None:
        self.broker, self.pattern, self.client = broker, pattern, client
        self.messages: list[tuple[str, bytes, bool]] = []
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    def __enter__(self) -> Listener:
        self._thread.start()
        assert self._ready.wait(10), "the listener did not subscribe"
        return self

    def __exit__(self, *exc: object) -> None:
        self.wait_quiet()
        assert self._loop is not None and self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def wait_quiet(self, quiet_s: float = 0.3, limit_s: float = 10) -> None:
        """Until nothing has arrived for ``quiet_s``."""
        deadline = time.monotonic() + limit_s
        seen = -1
        while time.monotonic() < deadline and seen != len(self.messages):
            seen = len(self.messages)
            time.sleep(quiet_s)

    def json(self, suffix: str = "") -> list[dict[str, object]]:
        return [json.loads(p) for t, p, _ in self.messages if t.endswith(suffix) and p]

    async def _run(self) -> None:
        import aiomqtt

        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        async with aiomqtt.Client("127.0.0.1", self.broker.port, **self.client) as client:  # type: ignore[arg-type]
            await client.subscribe(self.pattern, qos=1)
            self._ready.set()

            async def collect() -> None:
                async for m in client.messages:
                    payload = m.payload if isinstance(m.payload, bytes) else str(m.payload).encode()
                    self.messages.append((str(m.topic), payload, bool(m.retain)))

            task = asyncio.create_task(collect())
            await self._stop.wait()
            task.cancel()
