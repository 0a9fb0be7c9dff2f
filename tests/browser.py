"""Fixtures for real-browser tests of the web service: headless Chromium (Debian's package, driven by
Playwright) and a `shapesearch serve` subprocess on a free loopback port.

Import the fixtures into a test module (``from .browser import browser, page, service``).

Chromium comes from the distribution (``apt-get install -y chromium``), not from ``playwright
install`` (whose downloads are blocked here); it is installed on first use when missing and we
are root, and the fixture fails with a clear message when that is not possible.
"""

from __future__ import annotations

import contextlib
import fcntl
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

SERVE_COMMAND = [sys.executable, "-m", "shapesearch.cli", "serve"]
SERVER_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "disabled", "MPLBACKEND": "Agg"}
SERVER_START_TIMEOUT = 60.0
SERVER_STOP_TIMEOUT = 20.0


# ---------------------------------------------------------------------------------------------- chromium


def _tail(text: str, lines: int = 15) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def ensure_chromium() -> str:
    """Path of a Chromium executable; runs ``apt-get install -y chromium`` when there is none.

    Fails the test (not skips) with the reason when Chromium is missing and cannot be installed.
    """
    found = shutil.which("chromium")
    if found:
        return found
    if not shutil.which("apt-get"):
        pytest.fail("chromium is not installed and there is no apt-get to install it; install Chromium "
                    "so that `chromium` is on PATH")
    if os.geteuid() != 0:
        pytest.fail("chromium is not installed; run `apt-get install -y chromium` as root "
                    "(the browser tests install it themselves only when run as root)")
    # one installer at a time, even with several pytest processes
    lock_path = Path(tempfile.gettempdir()) / "shapesearch-chromium-install.lock"
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            found = shutil.which("chromium")
            if found:
                return found
            env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
            cmd = ["apt-get", "install", "-y", "chromium"]
            out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
            if out.returncode != 0:  # maybe stale package lists: refresh once and retry
                subprocess.run(["apt-get", "update"], capture_output=True, text=True, env=env, timeout=600)
                out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
        except (OSError, subprocess.TimeoutExpired) as exc:
            pytest.fail(f"could not install chromium with `apt-get install -y chromium`: {exc}")
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    found = shutil.which("chromium")
    if out.returncode != 0 or not found:
        pytest.fail(f"`apt-get install -y chromium` failed (exit {out.returncode}); the browser tests need "
                    f"Chromium on PATH:\n{_tail(out.stdout + out.stderr)}")
    return found


@pytest.fixture(scope="session")
def browser() -> Iterator:
    """A headless Chromium browser context with a fresh, empty profile (Playwright's sync API)."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("the browser tests need Playwright: `pip install playwright` (its browser download is not "
                    "needed; Debian's chromium is used)")
    executable = ensure_chromium()
    with tempfile.TemporaryDirectory(prefix="shapesearch-chromium-") as profile, sync_playwright() as pw:
        try:
            context = pw.chromium.launch_persistent_context(
                profile, executable_path=executable, headless=True, args=CHROMIUM_ARGS,
                viewport={"width": 1280, "height": 900}, accept_downloads=True)
        except Exception as exc:  # noqa: BLE001 - report why the browser did not start
            pytest.fail(f"could not start {executable} headless: {exc}")
        try:
            yield context
        finally:
            context.close()


@dataclass
class PageLog:
    """What a page reported: uncaught exceptions and console errors."""

    errors: list[str] = field(default_factory=list)
    console: list[str] = field(default_factory=list)

    def unexpected(self) -> list[str]:
        """Uncaught exceptions plus console errors other than failed HTTP loads (a 422 is logged as one)."""
        return self.errors + [m for m in self.console if not m.startswith("Failed to load resource")]


@pytest.fixture
def page(browser):
    """A new tab; ``page.log`` collects its JS errors."""
    tab = browser.new_page()
    log = PageLog()
    tab.on("pageerror", lambda exc: log.errors.append(f"uncaught: {exc}"))
    tab.on("console", lambda msg: log.console.append(msg.text) if msg.type == "error" else None)
    tab.log = log
    tab.set_default_timeout(30_000)
    try:
        yield tab
    finally:
        tab.close()


# ---------------------------------------------------------------------------------------------- server


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Service:
    """A running `shapesearch serve`."""

    url: str  # http://127.0.0.1:PORT
    token: str | None
    data: Path
    log_path: Path
    process: subprocess.Popen

    def page_url(self, fragment: str = "") -> str:
        query = f"?token={self.token}" if self.token else ""
        return f"{self.url}/{query}{fragment}"

    def log(self, lines: int = 40) -> str:
        try:
            return _tail(self.log_path.read_text(errors="replace"), lines)
        except OSError:
            return ""

    def get_json(self, path: str):
        req = urllib.request.Request(self.url + path)
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read())


def start_service(data: Path, token: str | None = None) -> Service:
    port = free_port()
    cmd = [*SERVE_COMMAND, "--data", str(data), "--port", str(port), "--host", "127.0.0.1"]
    if token:
        cmd += ["--token", token]
    log_path = data.parent / f"serve-{port}.log"
    env = {**os.environ, **SERVER_ENV}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    svc = Service(f"http://127.0.0.1:{port}", token, data, log_path, proc)
    deadline = time.monotonic() + SERVER_START_TIMEOUT
    last = "no answer"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"`{' '.join(cmd[1:])}` exited with {proc.returncode} before serving:\n{svc.log()}")
        try:
            svc.get_json("/api/jobs")
            return svc
        except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as exc:
            # HTTPException: something else answered on the port before the server bound it
            # (e.g. a Ray worker's gRPC); the server then exits, which the loop reports above
            last = str(exc)
        time.sleep(0.25)
    stop_service(svc)
    pytest.fail(f"`shapesearch serve` did not answer GET /api/jobs within {SERVER_START_TIMEOUT:.0f} s "
                f"(last: {last}):\n{svc.log()}")


def stop_service(svc: Service) -> None:
    """SIGTERM, then SIGKILL (the whole process group) when it has not exited in 20 s."""
    proc = svc.process
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=SERVER_STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


@pytest.fixture(scope="module")
def service(tmp_path_factory) -> Iterator[Service]:
    """`shapesearch serve` on a free port with a fresh data directory and a token (one per test module)."""
    data = tmp_path_factory.mktemp("service") / "data"
    data.mkdir()
    svc = start_service(data, token="page-test-token")
    try:
        yield svc
    finally:
        stop_service(svc)
