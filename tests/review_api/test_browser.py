"""A reviewer triages items by keyboard in headless Chromium (Debian package, driven by Playwright)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from edgemine.review_api import storage
from edgemine.review_api.db import Decision, Item
from tests.support.browser import CHROMIUM_ARGS, SHOTS, wait_until

pytestmark = [pytest.mark.browser, pytest.mark.integration]

# Injected by Playwright (not subject to the page's CSP): every Content-Security-Policy violation is recorded.
WATCH_CSP = """window.__csp = [];
document.addEventListener("securitypolicyviolation", (e) => window.__csp.push(
  `${e.violatedDirective} blocked ${e.blockedURI || "inline"} at ${e.sourceFile}:${e.lineNumber}`));"""


def open_page(browser: Any, url: str) -> tuple[Any, list[str]]:
    """The page at `url`, watched for CSP violations (console and securitypolicyviolation events); its CSP
    header must be there. Returns the page and the list violations land in (check it with csp_violations)."""
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    console: list[str] = []
    page.on("console", lambda m: console.append(m.text) if "Content Security Policy" in m.text else None)
    page.add_init_script(WATCH_CSP)
    response = page.goto(url)
    assert response is not None and "default-src 'none'" in response.headers["content-security-policy"]
    assert response.headers["x-content-type-options"] == "nosniff"
    return page, console


def csp_violations(page: Any, console: list[str]) -> list[str]:
    return [*console, *page.evaluate("window.__csp")]




@pytest.fixture
def live(tmp_path: Path, run_dirs: dict[str, Path]) -> Iterator[dict[str, Any]]:
    """A real uvicorn server on a free loopback port, with a run imported and two people."""
    import uvicorn

    from edgemine.review_api.app import create_app
    from edgemine.review_api.importer import Policy, import_run
    from edgemine.review_api.settings import load_settings

    settings = load_settings(database_url=f"sqlite:///{tmp_path / 'review.db'}", environment="test",
                             thumbnail_dir=tmp_path / "thumbs")
    app = create_app(settings)
    db = app.state.review.db
    import_run(db, run_dirs["small"], policy=Policy.from_settings(settings, overlap_fraction=0.0))
    tokens = {}
    with db.write() as s:
        for name, role in (("ana", "reviewer"), ("lead", "lead")):
            _, tokens[name] = storage.create_reviewer(s, name=name, role=role, now=app.state.review.clock())
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
    yield {"url": f"http://127.0.0.1:{port}", "db": db, "tokens": tokens}
    server.should_exit = True
    thread.join(20)


def test_reviewer_triages_by_keyboard_and_decisions_land_in_the_db(chromium: str, live: dict[str, Any],
                                                                    tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        page, console = open_page(browser, live["url"] + "/")
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.fill("#token", live["tokens"]["ana"])
        page.press("#token", "Enter")
        caption = page.locator("#frame-caption")
        expect(caption).to_contain_text("drv-", timeout=10_000)
        wait_until(page, "document.querySelector('#frame-img').naturalWidth > 0")
        wait_until(page, "document.querySelectorAll('#neighbors img').length === 3")
        page.screenshot(path=str(SHOTS / "review.png"))
        plan = [  # keys pressed on each item, and what must be stored
            (["2", "a", "Enter"], ("edge_case", "animal_on_road", ["novel_scene"])),
            (["n", "Enter"], ("not_edge_case", None, [])),
            (["u", "Enter"], ("unsure", None, [])),
            (["e", "Enter", "6", "s", "d", "Enter"], ("edge_case", "debris", ["perception_miss", "label_ambiguity"])),
        ]
        frames = []
        for keys, _ in plan:
            frame_id = caption.inner_text().split(" · ")[0]
            frames.append(frame_id)
            for key in keys:
                page.keyboard.press(key)
            expect(caption).not_to_contain_text(frame_id, timeout=10_000)
        skipped = caption.inner_text().split(" · ")[0]
        page.keyboard.press("k")
        expect(caption).not_to_contain_text(skipped, timeout=10_000)
        expect(page.locator("#session-stats")).to_contain_text("4 decided")
        assert page.evaluate("document.querySelector('#signals .bar i').style.width").endswith("%")
        violations = csp_violations(page, console)
        browser.close()
    assert not violations, violations  # the page works under its Content-Security-Policy
    assert not errors, errors
    with live["db"].read() as s:
        rows = s.execute(select(Item.frame_id, Decision.verdict, Decision.category, Decision.root_causes,
                                Decision.seconds, Decision.idempotency_key)
                         .join(Item, Item.id == Decision.item_id).order_by(Decision.id)).all()
    assert [r[0] for r in rows] == frames
    assert [(r[1], r[2], list(r[3])) for r in rows] == [want for _, want in plan]
    assert all(r[4] is not None and r[4] >= 0 and r[5] for r in rows)  # time spent and an idempotency key


def test_lead_view_shows_metrics_and_resolves_escalations(chromium: str, live: dict[str, Any],
                                                          tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    db = live["db"]
    with db.write() as s:  # one escalated item: a single 'unsure' review
        ana = next(r for r in storage.list_reviewers(s) if r.name == "ana")
        held = storage.lease_next(s, reviewer_id=ana.id, now=storage.get_run(s, run_id="run-small").imported_at)
        assert held is not None
    with db.write() as s:
        storage.submit_decision(s, item_id=held.item_id, reviewer_id=ana.id, now=held.leased_at,
                                decision=storage.DecisionInput(verdict="unsure"))
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        page, console = open_page(browser, live["url"] + "/")
        page.fill("#token", live["tokens"]["lead"])
        page.press("#token", "Enter")
        expect(page.locator("#frame-caption")).to_contain_text("drv-", timeout=10_000)
        page.keyboard.press("l")
        expect(page.locator("#cards")).to_contain_text("Krippendorff", timeout=10_000)
        expect(page.locator("#escalations .escalation")).to_have_count(1, timeout=10_000)
        page.screenshot(path=str(SHOTS / "lead.png"))
        page.select_option("#escalations select", "debris")
        page.click("#escalations button")
        expect(page.locator("#escalations")).to_contain_text("No escalations", timeout=10_000)
        violations = csp_violations(page, console)
        browser.close()
    assert not violations, violations
    with db.read() as s:
        item = storage.get_item(s, item_id=held.item_id)
        assert (item.status, item.consensus_category, item.consensus_method) == ("resolved", "debris", "lead")
