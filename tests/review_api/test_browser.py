"""Reviewers and leads use the page in headless Chromium (Debian package, driven by Playwright).

Two servers for the module (real uvicorn, real SQLite): `live` holds a run of single-review items with
context time offsets (triage, undo, progress, evidence, escalations); `crowd` holds a run where every item
wants 3 reviews but only two reviewers exist (the end of the queue, the lead's item browser, warnings).
One browser for the module; each test opens its own context (its own sessionStorage, so its own sign-in).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sqlalchemy import func, select

from edgemine.review_api import storage
from edgemine.review_api.db import Assignment, Decision, Item
from tests.support.browser import CHROMIUM_ARGS, SHOTS, LiveServer, axe_violations, serve, wait_until

pytestmark = [pytest.mark.browser, pytest.mark.integration]

# Injected by Playwright (not subject to the page's CSP): every Content-Security-Policy violation is recorded.
WATCH_CSP = """window.__csp = [];
document.addEventListener("securitypolicyviolation", (e) => window.__csp.push(
  `${e.violatedDirective} blocked ${e.blockedURI || "inline"} at ${e.sourceFile}:${e.lineNumber}`));"""


class Page:
    """A page of the review app in its own browser context, watched for CSP violations and script errors."""

    def __init__(self, browser: Any, url: str) -> None:
        self.context = browser.new_context(viewport={"width": 1400, "height": 900})
        self.page = self.context.new_page()
        self.console: list[str] = []
        self.errors: list[str] = []
        self.page.on("console", lambda m: self.console.append(m.text) if "Content Security Policy" in m.text else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.add_init_script(WATCH_CSP)
        response = self.page.goto(url)
        assert response is not None and "default-src 'none'" in response.headers["content-security-policy"]
        assert response.headers["x-content-type-options"] == "nosniff"

    def sign_in(self, token: str) -> None:
        self.page.fill("#token", token)
        self.page.press("#token", "Enter")

    def frame_id(self) -> str:
        return str(self.page.locator("#frame-caption").inner_text().split(" · ")[0])

    def press(self, *keys: str) -> None:
        for key in keys:
            self.page.keyboard.press(key)

    def close(self) -> None:
        """Closes the context; the page must have worked under its CSP and without script errors."""
        violations = [*self.console, *self.page.evaluate("window.__csp")]
        self.context.close()
        assert not violations, violations
        assert not self.errors, self.errors


@pytest.fixture(scope="module")
def browser(chromium: str) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        yield b
        b.close()


def with_context_offsets(src: Path, logs: Path, out: Path) -> Path:
    """A copy of run dir `src` whose candidates carry context_offsets_s (as `edgemine mine` writes them):
    each context frame's signed offset in seconds from its candidate, from the frames' timestamps; and
    novelty_calibration, every other rank as if ranked among the fleet's night frames ("time_of_day=night")."""
    out.mkdir(parents=True, exist_ok=True)
    shutil.copy(src / "run.json", out / "run.json")
    man = pq.read_table(logs / "manifest.parquet", columns=["uri", "timestamp"]).to_pylist()
    when = {str(logs.resolve() / r["uri"]): r["timestamp"] for r in man}
    cand = pq.read_table(src / "candidates.parquet")
    offsets = [[(when[u] - t).total_seconds() for u in uris]
               for uris, t in zip(cand.column("context_uris").to_pylist(), cand.column("timestamp").to_pylist(),
                                  strict=True)]
    assert any(o < 0 for row in offsets for o in row) and any(o > 0 for row in offsets for o in row)
    cand = cand.append_column("context_offsets_s", pa.array(offsets, pa.list_(pa.float32())))
    cand = cand.append_column("novelty_calibration", pa.array(
        ["time_of_day=night" if r % 2 else "reference" for r in cand.column("rank").to_pylist()], pa.string()))
    pq.write_table(cand, out / "candidates.parquet")
    return out


def people(server: LiveServer, *names_roles: tuple[str, str]) -> dict[str, int]:
    ids = {}
    with server.db.write() as s:
        for name, role in names_roles:
            r, server.tokens[name] = storage.create_reviewer(s, name=name, role=role, now=server.clock())
            ids[name] = server.ids[name] = r.id
    return ids


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, run_dirs: dict[str, Path], synth_logs: Path) -> Iterator[LiveServer]:
    """run-small (24 items, one review each, context offsets) and a lead."""
    tmp = tmp_path_factory.mktemp("live")
    run = with_context_offsets(run_dirs["small"], synth_logs, tmp / "run")
    with serve(tmp, run, overlap_fraction=0.0) as server:
        people(server, ("lead", "lead"))
        yield server


@pytest.fixture(scope="module")
def crowd(tmp_path_factory: pytest.TempPathFactory, run_dirs: dict[str, Path]) -> Iterator[LiveServer]:
    """run-other (12 items, every one wants 3 reviews) with two reviewers, who disagree on a few items:
    dee has decided all but the last item, eve the first six."""
    tmp = tmp_path_factory.mktemp("crowd")
    with serve(tmp, run_dirs["other"], overlap_fraction=1.0, overlap_reviews=3) as server:
        ids = people(server, ("dee", "reviewer"), ("eve", "reviewer"), ("boss", "lead"))
        for name, n in (("dee", 11), ("eve", 6)):
            for k in range(n):
                with server.db.write() as s:
                    held = storage.lease_next(s, reviewer_id=ids[name], now=server.clock())
                    assert held is not None
                    # eve says debris where dee says not an edge case on items 0, 2, 4: three disagreements
                    debris = name == "eve" and k % 2 == 0
                    vote = storage.DecisionInput(verdict="edge_case", category="debris") if debris else \
                        storage.DecisionInput(verdict="not_edge_case")
                    storage.submit_decision(s, item_id=held.item_id, reviewer_id=ids[name], now=server.clock(),
                                            decision=vote)
        yield server


# ---------------------------------------------------------------- the reviewer
def test_reviewer_triages_by_keyboard_and_decisions_land_in_the_db(browser: Any, live: LiveServer) -> None:
    from playwright.sync_api import expect

    people(live, ("ana", "reviewer"))
    p = Page(browser, live.url + "/")
    p.sign_in(live.tokens["ana"])
    page = p.page
    caption = page.locator("#frame-caption")
    expect(caption).to_contain_text("drv-", timeout=10_000)
    wait_until(page, "document.querySelector('#frame-img').naturalWidth > 0")
    wait_until(page, "document.querySelectorAll('#neighbors img').length === 3")
    wait_until(page, "[...document.querySelectorAll('#context img')].every((i) => i.naturalWidth > 0)")
    page.screenshot(path=str(SHOTS / "review.png"))
    plan = [  # keys pressed on each item, and what must be stored
        (["2", "a", "Enter"], ("edge_case", "animal_on_road", ["novel_scene"])),
        (["n", "Enter"], ("not_edge_case", None, [])),
        (["u", "Enter"], ("unsure", None, [])),
        (["e", "Enter", "6", "s", "d", "Enter"], ("edge_case", "debris", ["perception_miss", "label_ambiguity"])),
    ]
    frames = []
    for keys, _ in plan:
        frame_id = p.frame_id()
        frames.append(frame_id)
        p.press(*keys)
        expect(caption).not_to_contain_text(frame_id, timeout=10_000)
    skipped = p.frame_id()
    p.press("k")
    expect(caption).not_to_contain_text(skipped, timeout=10_000)
    expect(page.locator("#progress")).to_contain_text("you: 4 in this run, 4 today")
    assert page.evaluate("document.querySelector('#signals .bar i').style.width").endswith("%")
    p.press("?")  # the keys help: a reviewer has one view, so no R · L line
    expect(page.locator("#help")).to_be_visible()
    assert page.locator("#help-views").is_hidden()
    p.press("Escape")
    p.close()
    with live.db.read() as s:
        ana = next(r for r in storage.list_reviewers(s) if r.name == "ana")
        rows = s.execute(select(Item.frame_id, Decision.verdict, Decision.category, Decision.root_causes,
                                Decision.seconds, Decision.idempotency_key)
                         .join(Item, Item.id == Decision.item_id).where(Decision.reviewer_id == ana.id)
                         .order_by(Decision.id)).all()
    assert [r[0] for r in rows] == frames
    assert [(r[1], r[2], list(r[3])) for r in rows] == [want for _, want in plan]
    assert all(r[4] is not None and r[4] >= 0 and r[5] for r in rows)  # time spent and an idempotency key


def test_evidence_enlarges_by_click_and_key_with_time_offsets_and_metadata(browser: Any, live: LiveServer) -> None:
    from playwright.sync_api import expect

    people(live, ("fay", "reviewer"))
    p = Page(browser, live.url + "/")
    p.sign_in(live.tokens["fay"])
    page = p.page
    expect(page.locator("#frame-caption")).to_contain_text("drv-", timeout=10_000)
    item = page.evaluate("state.current.item")
    # key metadata, always on screen (not folded away)
    meta = item["metadata"]
    line = page.locator("#keymeta")
    expect(line).to_be_visible()
    expect(line).to_contain_text(f"light: {meta['time_of_day']}")
    expect(line).to_contain_text(f"weather: {meta['weather']}")
    expect(line).to_contain_text(f"road: {meta['road_type'].replace('_', ' ')}")
    expect(line).to_contain_text(f"speed: {meta['speed_mps']:.1f} m/s")
    calibrations = {novelty_within_shown(page, item)}
    # context frames carry their time offsets, in drive order, with this frame marked at 0
    offsets = item["context_offsets_s"]
    assert offsets, "the item JSON has no context_offsets_s"
    caps = page.locator("#context figcaption").all_inner_texts()
    want = sorted([f"{o:+.1f} s" for o in offsets] + ["◆ this frame"],
                  key=lambda c: 0.0 if c.startswith("◆") else float(c[:-2]))
    assert caps == want
    expect(page.locator("#context figure.current")).to_have_count(1)
    # a click enlarges; arrows move; Esc closes and gives the focus back
    page.locator("#context .thumb").first.click()
    box = page.locator("#lightbox")
    expect(box).to_be_visible()
    first = page.locator("#lightbox-caption").inner_text()
    assert first.startswith(f"context · {caps[0]}")
    wait_until(page, "document.querySelector('#lightbox-img').naturalWidth > 0")
    page.screenshot(path=str(SHOTS / "lightbox.png"))
    big = page.evaluate("document.querySelector('#lightbox-img').getBoundingClientRect().width")
    small = page.evaluate("document.querySelector('#context img').getBoundingClientRect().width")
    assert big > 3 * small, (big, small)
    p.press("ArrowRight")
    expect(page.locator("#lightbox-caption")).not_to_have_text(first)
    p.press("ArrowLeft")
    expect(page.locator("#lightbox-caption")).to_have_text(first)
    p.press("Escape")
    expect(box).to_be_hidden()
    # and a key opens it on the frame itself; shortcuts stay off while it is open
    p.press("v")
    expect(box).to_be_visible()
    expect(page.locator("#lightbox-caption")).to_contain_text("this frame (1 of")
    p.press("n", "Escape")
    assert page.evaluate("state.verdict") is None
    # a selected chip's key badge stays legible: light text on a dark badge
    p.press("2", "a")
    wait_until(page, "[...document.querySelectorAll('#context img, #frame-img')].every((i) => i.naturalWidth > 0)")
    page.screenshot(path=str(SHOTS / "review-picked.png"))
    colors = page.evaluate("""(() => { const k = getComputedStyle(document.querySelector('#categories .chip.on kbd'));
        return [k.color, k.backgroundColor]; })()""")
    assert contrast(*colors) >= 4.5, colors
    link = page.evaluate("""(() => { const a = getComputedStyle(document.querySelector('#help-link'));
        return [a.color, getComputedStyle(document.querySelector('.side')).backgroundColor]; })()""")
    assert contrast(*link) >= 4.5, link
    # the focus went back to the enlarged frame's button; Enter still submits rather than enlarging again
    assert page.evaluate("document.activeElement.classList.contains('thumb')")
    shown = p.frame_id()
    p.press("Enter")
    expect(page.locator("#frame-caption")).not_to_contain_text(shown, timeout=10_000)
    expect(box).to_be_hidden()
    for _ in range(6):  # skip (k) until an item of the other calibration shows: every other rank has it
        calibrations.add(novelty_within_shown(page, page.evaluate("state.current.item")))
        if len(calibrations) == 2:
            break
        shown = p.frame_id()
        p.press("k")
        expect(page.locator("#frame-caption")).not_to_contain_text(shown, timeout=10_000)
    assert calibrations == {"reference", "time_of_day=night"}
    p.close()


def novelty_within_shown(page: Any, item: dict[str, Any]) -> str:
    """Novelty ranked among the fleet's frames of a value says so under the signals; against the reference,
    nothing does. Returns the item's novelty_calibration."""
    from playwright.sync_api import expect

    within = page.locator("#novelty-within")
    if item["novelty_calibration"] == "reference":
        expect(within).to_have_count(0)
    else:
        expect(within).to_have_text(f"novelty among this fleet's {item['novelty_calibration']} frames")
    return str(item["novelty_calibration"])


def rgb(css: str) -> tuple[float, ...]:
    return tuple(float(x) for x in css[css.index("(") + 1:-1].split(",")[:3])


def contrast(fg: str, bg: str) -> float:
    """The WCAG contrast ratio of two CSS rgb() colours."""
    def lum(c: tuple[float, ...]) -> float:
        lin = [(v / 255) / 12.92 if v / 255 <= 0.03928 else ((v / 255 + 0.055) / 1.055) ** 2.4 for v in c]
        return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]
    a, b = sorted((lum(rgb(fg)), lum(rgb(bg))), reverse=True)
    return (a + 0.05) / (b + 0.05)


def test_undo_by_key_gives_the_item_back_and_keys_never_type_into_notes(browser: Any, live: LiveServer) -> None:
    """Ctrl+Z used to move focus into the notes box (the browser's own undo of the last note), and the next
    shortcut ("e") was typed there as text. Now Z and Ctrl+Z withdraw your last decision."""
    from playwright.sync_api import expect

    ids = people(live, ("bo", "reviewer"))
    p = Page(browser, live.url + "/")
    p.sign_in(live.tokens["bo"])
    page = p.page
    caption = page.locator("#frame-caption")
    expect(caption).to_contain_text("drv-", timeout=10_000)
    first = p.frame_id()
    first_id = page.evaluate("state.current.item.id")
    p.press("/")
    page.keyboard.type("looks like a tarp")  # k, e, a, s are shortcuts outside the field: none may fire
    assert page.evaluate("[state.verdict, state.roots.size, document.activeElement.id]") == [None, 0, "notes"]
    assert p.frame_id() == first
    p.press("Escape", "n", "Enter")
    expect(caption).not_to_contain_text(first, timeout=10_000)
    second = p.frame_id()
    p.press("Control+z")  # the item comes back, the old decision preselected, focus nowhere near the notes
    expect(caption).to_contain_text(first, timeout=10_000)
    expect(page.locator("#amend-note")).to_contain_text("not edge case")
    expect(page.locator(".verdicts button.on")).to_have_attribute("data-verdict", "not_edge_case")
    assert page.evaluate("document.activeElement.id") != "notes"
    assert page.locator("#notes").input_value() == "looks like a tarp"
    p.press("e")  # a shortcut, not a letter in the notes
    assert page.locator("#notes").input_value() == "looks like a tarp"
    expect(page.locator(".verdicts button.on")).to_have_attribute("data-verdict", "edge_case")
    p.press("6", "Enter")  # decided again: debris
    expect(caption).to_contain_text(second, timeout=10_000)  # and the item it held before is back
    # plain Z works the same; a field the user did not open never takes keys
    p.press("z")
    expect(caption).to_contain_text(first, timeout=10_000)
    expect(page.locator(".verdicts button.on")).to_have_attribute("data-verdict", "edge_case")
    page.evaluate("document.querySelector('#notes').focus()")  # focus moved by script, not by the user
    p.press("u")
    assert page.locator("#notes").input_value() == "looks like a tarp"
    expect(page.locator(".verdicts button.on")).to_have_attribute("data-verdict", "unsure")
    p.press("Enter")
    expect(caption).to_contain_text(second, timeout=10_000)
    p.close()
    with live.db.read() as s:
        mine = s.execute(select(Decision.verdict, Decision.category).where(
            Decision.item_id == first_id, Decision.reviewer_id == ids["bo"]).order_by(Decision.id)).all()
    assert mine[-1] == ("unsure", None)  # the latest version is what counts
    history = live.get("lead", f"/items/{first_id}/history")
    assert [h["action"] for h in history] == ["decide", "undo", "decide", "undo", "decide"], history
    assert history[1]["before"]["verdict"] == "not_edge_case" and history[1]["before"]["notes"] == "looks like a tarp"
    assert history[2]["after"]["category"] == "debris"
    assert {h["reviewer_name"] for h in history} == {"bo"}


def test_progress_survives_a_reload(browser: Any, live: LiveServer) -> None:
    from playwright.sync_api import expect

    people(live, ("cy", "reviewer"))
    p = Page(browser, live.url + "/")
    p.sign_in(live.tokens["cy"])
    page = p.page
    caption = page.locator("#frame-caption")
    expect(caption).to_contain_text("drv-", timeout=10_000)
    for keys in (["n", "Enter"], ["u", "Enter"]):
        shown = p.frame_id()
        p.press(*keys)
        expect(caption).not_to_contain_text(shown, timeout=10_000)
    progress = page.locator("#progress")
    expect(progress).to_contain_text("you: 2 in this run, 2 today")
    before = progress.inner_text()
    page.reload()
    expect(caption).to_contain_text("drv-", timeout=10_000)
    expect(progress).to_contain_text("you: 2 in this run, 2 today")
    expect(progress).to_contain_text(" of 24 in this run")
    assert progress.inner_text().split(" · ")[:2] == before.split(" · ")[:2]
    want = live.get("cy", "/me/progress?run_id=run-small")
    expect(progress).to_contain_text(f"Item {want['position']} of {want['total_items']} in this run")
    p.close()


def test_lead_lands_on_the_lead_view_and_resolves_an_escalation_by_keyboard(browser: Any, live: LiveServer) -> None:
    from playwright.sync_api import expect

    db = live.db
    ids = people(live, ("gus", "reviewer"))
    with db.write() as s:  # one escalated item: a single 'unsure' review
        held = storage.lease_next(s, reviewer_id=ids["gus"], now=live.clock())
        assert held is not None
        storage.submit_decision(s, item_id=held.item_id, reviewer_id=ids["gus"], now=live.clock(),
                                decision=storage.DecisionInput(verdict="unsure"))
    p = Page(browser, live.url + "/")
    p.sign_in(live.tokens["lead"])
    page = p.page
    expect(page.locator("#cards")).to_contain_text("Krippendorff", timeout=10_000)
    expect(page.locator("#cards")).to_contain_text("resolved by a lead")  # the cards add up to the run
    assert page.locator("#review").is_hidden()
    rows = page.locator("#escalations .escalation")  # other tests' reviewers left theirs too, oldest first
    escalation = page.locator(f"#escalations .escalation[data-item-id='{held.item_id}']")
    expect(escalation).to_be_visible(timeout=10_000)
    expect(escalation).to_contain_text("unsure")  # the reason in words, not "no_votes"
    assert "no_votes" not in escalation.inner_text()
    n = rows.count()
    page.screenshot(path=str(SHOTS / "lead.png"))
    p.press("x")  # to the first escalation, then down to gus's, the newest
    for _ in range(n - 1):
        p.press("ArrowDown")
    assert page.evaluate("document.activeElement.dataset.itemId") == str(held.item_id)
    p.press("6", "g")  # debris; make it gold
    assert escalation.locator("select").input_value() == "debris"
    assert escalation.locator("input[type=checkbox]").is_checked()
    p.press("Enter")
    expect(escalation).to_have_count(0, timeout=10_000)
    expect(rows).to_have_count(n - 1)
    if n > 1:  # the focus moves on to the next escalation, so a lead can keep going
        assert page.evaluate("document.activeElement.classList.contains('escalation')")
    p.press("r")  # the Review tab asks before it leases anything to a lead
    expect(page.locator("#start")).to_be_visible()
    assert page.locator("#item").is_hidden()
    p.close()
    with db.read() as s:
        item = storage.get_item(s, item_id=held.item_id)
        assert (item.status, item.consensus_category, item.consensus_method) == ("gold", "debris", "lead")
        assert item.is_gold and item.gold_category == "debris"  # "make gold" by G
        lead_id = next(r.id for r in storage.list_reviewers(s) if r.name == "lead")
        assert not s.scalars(select(Assignment).where(Assignment.reviewer_id == lead_id)).all()  # no lease taken


# ---------------------------------------------------------------- the end of the queue and the lead's browser
def decide_what_is_left(p: Page) -> None:
    """dee's last item (the crowd fixture decided the others): not an edge case, by key."""
    from playwright.sync_api import expect

    page = p.page
    expect(page.locator("#frame-caption:visible, #empty:visible").first).to_be_visible(timeout=10_000)
    while page.locator("#item").is_visible():
        shown = p.frame_id()
        # run-other was imported without context_offsets_s: its context frames are labelled by position
        caps = page.locator("#context figcaption").all_inner_texts()
        assert caps and caps == [f"#{k + 1}" for k in range(len(caps))], caps
        expect(page.locator("#context figure.current")).to_have_count(0)
        p.press("n", "Enter")
        wait_until(page, f"!document.querySelector('#empty').hidden || "
                         f"!document.querySelector('#frame-caption').textContent.startsWith({shown!r})")


def test_end_of_queue_says_what_you_did_and_what_waits(browser: Any, crowd: LiveServer) -> None:
    from playwright.sync_api import expect

    p = Page(browser, crowd.url + "/")
    p.sign_in(crowd.tokens["dee"])
    page = p.page
    decide_what_is_left(p)  # dee's 12th and last item
    summary = page.locator("#empty")
    expect(summary).to_be_visible(timeout=10_000)
    expect(page.locator("#summary-mine")).to_contain_text("You decided 12 items of run-other")
    expect(page.locator("#summary-run")).to_contain_text("0 of 12 items of this run are done")
    waits = page.locator("#waiting li[data-reason=needs_more_reviewers]")
    expect(waits).to_contain_text("12 items")
    expect(waits).to_contain_text("3rd reviewer")
    expect(page.locator("#recent li")).to_have_count(5)
    expect(page.locator("#recent-undo")).to_be_visible()
    page.screenshot(path=str(SHOTS / "review-done.png"))
    last = page.locator("#recent li b").first.inner_text()
    p.press("z")  # undo from the end of the queue: the last item comes back, then the summary again
    expect(page.locator("#amend-note")).to_be_visible(timeout=10_000)
    expect(page.locator("#frame-caption")).to_contain_text(last)
    expect(page.locator(".verdicts button.on")).to_have_attribute("data-verdict", "not_edge_case")
    p.press("Enter")
    expect(summary).to_be_visible(timeout=10_000)
    expect(page.locator("#summary-mine")).to_contain_text("You decided 12 items of run-other")
    p.close()
    assert crowd.get("dee", "/me/progress?run_id=run-other")["mine_in_run"] == 12
    dee = crowd.ids["dee"]
    with crowd.db.read() as s:  # decided again, and nothing left leased to her
        assert s.scalar(select(func.count()).select_from(Decision).where(Decision.reviewer_id == dee)) == 12
        live_leases = select(Assignment).where(Assignment.reviewer_id == dee, Assignment.state == "leased")
        assert not s.scalars(live_leases).all()


def test_lead_item_browser_filters_and_opens_an_item_with_its_history(browser: Any, crowd: LiveServer) -> None:
    from playwright.sync_api import expect

    p = Page(browser, crowd.url + "/")
    p.sign_in(crowd.tokens["boss"])
    page = p.page
    rows = page.locator("#items-table .item-row")
    expect(rows).to_have_count(12, timeout=10_000)
    warning = page.locator("#warnings")
    expect(warning).to_contain_text("overlap_reviews=3")
    expect(warning).to_contain_text("2 reviewers")
    pair = page.locator("#pairs-table tr", has_text="dee · eve")
    expect(pair.locator("td").last).to_have_text("6")  # dee and eve share 6 items: κ with its n
    expect(rows.first.locator("td")).to_have_count(4 + 3)  # frame, rank, status, consensus, 3 reviews side by side
    # agreement with the OTHER reviewer's vote, on the 6 shared items only: they differ on 3
    for name in ("dee", "eve"):
        expect(page.locator("#reviewer-table tr", has_text=name)).to_contain_text("0.50 n=6")
    page.select_option("#f-status", "escalated")
    expect(page.locator("#items-table")).to_contain_text("no item matches")
    page.select_option("#f-status", "queued")
    expect(rows).to_have_count(12)
    page.select_option("#f-disagreement", "true")
    expect(rows).to_have_count(3)
    for text in rows.all_inner_texts():
        assert "debris" in text and "not edge case" in text
    page.select_option("#f-disagreement", "")
    page.select_option("#f-reviewer", str(crowd.ids["eve"]))
    expect(rows).to_have_count(6)
    page.select_option("#f-category", "debris")
    expect(rows).to_have_count(3)
    page.select_option("#f-category", "")
    page.select_option("#f-reviewer", "")
    expect(rows).to_have_count(12)
    page.screenshot(path=str(SHOTS / "lead-items.png"), full_page=True)
    p.press("i")
    p.press("ArrowDown")
    focused = page.evaluate("document.activeElement.dataset.itemId")
    assert focused == rows.nth(1).get_attribute("data-item-id")
    p.press("Enter")
    detail = page.locator("#detail")
    expect(detail).to_be_visible()
    expect(page.locator("#detail-history li")).to_have_count(2)  # dee and eve decided it
    expect(page.locator("#detail-history")).to_contain_text("dee decided")
    expect(page.locator("#detail-reviews tr")).to_have_count(3)
    wait_until(page, "document.querySelector('#detail-img').naturalWidth > 0")
    page.screenshot(path=str(SHOTS / "lead-item.png"))
    p.press("Escape")
    expect(detail).to_be_hidden()
    p.close()


def test_the_page_has_no_serious_accessibility_violations(browser: Any, live: LiveServer, crowd: LiveServer) -> None:
    """axe-core (npm) on the review view, the end of the queue and the lead view: no serious or critical."""
    from playwright.sync_api import expect

    found: dict[str, list[str]] = {}
    people(live, ("axe", "reviewer"))
    p = Page(browser, live.url + "/")
    p.sign_in(live.tokens["axe"])
    expect(p.page.locator("#frame-caption")).to_contain_text("drv-", timeout=10_000)
    wait_until(p.page, "document.querySelectorAll('#neighbors img').length === 3")
    found["review"] = axe_violations(p.page)
    p.press("v")
    found["review, frame enlarged"] = axe_violations(p.page)
    p.close()
    p = Page(browser, crowd.url + "/")
    p.sign_in(crowd.tokens["dee"])
    decide_what_is_left(p)
    expect(p.page.locator("#empty")).to_be_visible(timeout=10_000)
    expect(p.page.locator("#recent li").first).to_be_visible()
    found["end of queue"] = axe_violations(p.page)
    p.close()
    p = Page(browser, crowd.url + "/")
    p.sign_in(crowd.tokens["boss"])
    expect(p.page.locator("#items-table .item-row")).to_have_count(12, timeout=10_000)
    found["lead"] = axe_violations(p.page)
    p.page.locator("#items-table .item-row").first.click()
    expect(p.page.locator("#detail-history li").first).to_be_visible()
    found["lead, item open"] = axe_violations(p.page)
    # the engine really looks: a button with no name planted in the page is caught
    p.page.evaluate("document.body.appendChild(document.createElement('button'))")
    planted = axe_violations(p.page)
    assert any(v.startswith("button-name (critical)") for v in planted), planted
    p.close()
    bad = {view: v for view, v in found.items() if v}
    assert not bad, json.dumps(bad, indent=1)
