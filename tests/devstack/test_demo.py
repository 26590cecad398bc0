"""`make demo` for real: the launcher starts every component, a lead browses it in Chromium,
Ctrl-C stops everything, and a second run finds what the first one made."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from devstack.cluster import free_port

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.browser


class Demo:
    def __init__(self, home: Path, port: int) -> None:
        self.home, self.port = home, port
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "devstack",
                "demo",
                "--home",
                str(home),
                "--port",
                str(port),
                "--users",
                "300",
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={k: v for k, v in os.environ.items() if k not in ("DATABASE_URL",)},
        )

    def wait_up(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        assert self.proc.stdout is not None
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                raise AssertionError("demo exited early:\n" + "".join(self.lines))
            self.lines.append(line)
            if "Runway is up" in line:
                return
        raise AssertionError("demo did not come up:\n" + "".join(self.lines))

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def stop(self) -> str:
        self.proc.send_signal(signal.SIGINT)
        try:
            rest, _ = self.proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            # Leave nothing running for the rest of the session, then fail as before.
            self.proc.terminate()
            self.proc.communicate(timeout=60)
            raise
        self.lines.append(rest)
        return self.output


def log_in(page, base: str, username: str, password: str) -> None:
    page.goto(f"{base}/accounts/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{base}/")


def test_the_demo_serves_the_console_and_a_lead_sees_the_pending_revisions(page, artifacts):
    parent = Path(tempfile.mkdtemp(prefix="runway-demo-"))
    parent.chmod(0o755)
    home, port = parent / "home", free_port()
    base = f"http://127.0.0.1:{port}"

    demo = Demo(home, port)
    try:
        demo.wait_up()
        passwords = dict(re.findall(r"^\s+(lead2?|engineer|viewer)\s+(\S+)$", demo.output, re.M))
        assert set(passwords) == {"lead", "lead2", "engineer", "viewer"}, demo.output

        log_in(page, base, "lead", passwords["lead"])
        # The demo runs as it will be deployed: DEBUG off, static files through WhiteNoise.
        css = page.request.get(f"{base}/static/runway.css")
        assert css.status == 200 and "text/css" in css.headers["content-type"]
        missing = page.request.get(f"{base}/no-such-page/")
        assert missing.status == 404 and "URLconf" not in missing.text()
        row = page.locator('tr[data-db="analyticbot"]')
        # The worker's first connection check lands within seconds; the page shows it on reload.
        for _ in range(60):
            if "0016" in row.inner_text():
                break
            time.sleep(0.5)
            page.reload()
        assert "0016" in row.inner_text()
        assert "4 pending" in row.inner_text()
        assert "Production" in row.inner_text()
        assert page.locator('tr[data-db="analyticbot-staging"]').is_visible()
        page.screenshot(path=artifacts / "overview.png", full_page=True)

        row.get_by_role("link", name="history").click()
        page.wait_for_url(f"{base}/databases/analyticbot/history/")
        current = page.locator("tr.current")
        assert "0016" in current.inner_text()
        pending = page.locator("tr.pending")
        assert [pending.nth(i).get_attribute("data-rev") for i in range(pending.count())] == [
            "0020",
            "0019",
            "0018",
            "0017",
        ]
        grades = {
            rev: page.locator(f"tr[data-rev='{rev}'] [data-grade]").get_attribute("data-grade")
            for rev in ("0017", "0018", "0019", "0020")
        }
        assert grades["0017"] == "low" and grades["0019"] == "medium"
        assert grades["0020"] in ("medium", "high")  # medium on the demo's 2,000 users
        page.screenshot(path=artifacts / "history.png", full_page=True)
        page.goto(f"{base}/databases/analyticbot/preflight/")
        assert page.get_by_role("button", name="Run the gates").is_visible()
    finally:
        output = demo.stop()
    assert demo.proc.returncode == 0, output
    assert "stopped everything it started" in output
    assert not (home / "pg" / "data" / "postmaster.pid").exists()

    again = Demo(home, port)
    try:
        again.wait_up()
        assert "already there" in again.output and "exist already" in again.output
        page.context.clear_cookies()
        log_in(page, base, "lead", passwords["lead"])
        assert page.locator('tr[data-db="analyticbot"]').is_visible()
    finally:
        again.stop()
    assert again.proc.returncode == 0
