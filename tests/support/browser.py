"""Headless Chromium for the browser tests: the Debian binary (scripts/chromium.sh), its flags, a CSP-safe wait,
a live review server (`serve`) and axe-core accessibility checks (`axe_violations`)."""

from __future__ import annotations

import os
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[2]  # the repository
SHOTS = Path(os.environ.get("EDGEMINE_SCREENSHOTS", tempfile.gettempdir()))  # where a person can look at pages
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync"]


def chromium_path() -> str:
    """Install (when missing) and locate the Debian chromium; Playwright's own download fails here."""
    out = subprocess.run([str(ROOT / "scripts" / "chromium.sh")], capture_output=True, text=True, timeout=900)
    if out.returncode != 0:
        raise RuntimeError(f"scripts/chromium.sh failed: {out.stderr.strip()}")
    return out.stdout.strip().splitlines()[-1]


def wait_until(page: Any, expression: str, timeout: float = 10.0) -> None:
    """Poll `expression` from here: Playwright's wait_for_function evaluates strings with eval, which the
    review page's CSP (no 'unsafe-eval') refuses; page.evaluate goes through DevTools instead."""
    deadline = time.monotonic() + timeout
    while not page.evaluate(expression):
        assert time.monotonic() < deadline, f"timed out waiting for {expression}"
        time.sleep(0.05)


# ---------------------------------------------------------------- a live review server for the page
@dataclass
class LiveServer:
    """A real uvicorn server on a loopback port around an app (`serve`); `tokens` by person's name."""

    url: str
    app: Any
    tokens: dict[str, str] = field(default_factory=dict)
    ids: dict[str, int] = field(default_factory=dict)

    @property
    def db(self) -> Any:
        return self.app.state.review.db

    def clock(self) -> datetime:
        return self.app.state.review.clock()  # type: ignore[no-any-return]

    def get(self, name: str, path: str) -> Any:
        """GET `path` as `name` over HTTP; the JSON body (asserts a 200)."""
        r = httpx.get(self.url + path, headers={"Authorization": f"Bearer {self.tokens[name]}"}, timeout=10)
        assert r.status_code == 200, (path, r.status_code, r.text)
        return r.json()


@contextmanager
def serve(tmp: Path, run_dir: Path, **policy: Any) -> Iterator[LiveServer]:
    """An app on a fresh SQLite file in `tmp` with `run_dir` imported (policy overrides by name), served by
    uvicorn on a free loopback port until the block ends."""
    import uvicorn

    from edgemine.review_api.app import create_app
    from edgemine.review_api.importer import Policy, import_run
    from edgemine.review_api.settings import load_settings

    settings = load_settings(database_url=f"sqlite:///{tmp / 'review.db'}", environment="test",
                             thumbnail_dir=tmp / "thumbs")
    app = create_app(settings)
    import_run(app.state.review.db, run_dir, policy=Policy.from_settings(settings, **policy))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started
    try:
        yield LiveServer(url=f"http://127.0.0.1:{port}", app=app)
    finally:
        server.should_exit = True
        thread.join(20)


# ---------------------------------------------------------------- axe-core, the accessibility rules engine
def axe_source() -> str:
    """axe.min.js from the npm registry (scripts/axe_core.sh caches it under .venv/axe)."""
    out = subprocess.run([str(ROOT / "scripts" / "axe_core.sh")], capture_output=True, text=True, timeout=300)
    if out.returncode != 0:
        raise RuntimeError(f"scripts/axe_core.sh failed: {out.stderr.strip()}")
    return Path(out.stdout.strip().splitlines()[-1]).read_text(encoding="utf-8")


AXE_SERIOUS = ("serious", "critical")


def axe_violations(page: Any, impacts: tuple[str, ...] = AXE_SERIOUS) -> list[str]:
    """Run axe-core (WCAG 2.x A and AA rules) on the page as it is now; one line per violation of `impacts`
    with the elements it found. The source goes in through DevTools (page.evaluate), which the page's
    Content-Security-Policy does not govern; a <script> tag would be refused."""
    if not page.evaluate("typeof window.axe === 'object'"):
        page.evaluate(axe_source())
    result = page.evaluate("""axe.run(document, {resultTypes: ["violations"],
        runOnly: {type: "tag", values: ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "best-practice"]}})""")
    return [f"{v['id']} ({v['impact']}): {v['help']} at " + ", ".join(" ".join(n["target"]) for n in v["nodes"][:5])
            for v in result["violations"] if v["impact"] in impacts]
