"""Headless Chromium for the browser tests: the Debian binary (scripts/chromium.sh), its flags, a CSP-safe wait."""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

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
