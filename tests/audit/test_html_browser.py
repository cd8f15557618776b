"""The HTML report in a real headless Chromium (Debian's ``chromium``, driven by Playwright).

The page is generated through the real CLI from a real trail (a manager over the real
alpaca-py SDK and the simulator) and opened from its file: it must load nothing, log no
error, show the numbers, timelines, marks, diagram and verdicts, keep hostile owners as text,
lay its charts out without cut bars or overlapping labels, and print to PDF.

Without Chromium (or Playwright) these tests skip, unless STREAMWARDEN_REQUIRE_CHROMIUM=1
(CI, whose ``.ci/run`` installs Debian's ``chromium``), where they fail.
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from streamwarden import Credentials, __version__
from streamwarden.audit._timeline_svg import PLOT_START, WIDTH
from streamwarden.audit.log import AuditLog
from streamwarden.cli import main
from tests.audit.histories import open_log
from tests.audit.sim_history import HOSTILE_OWNER, SimHistory, run_sim_history
from tests.conftest import CANARY_KEY_ID, CANARY_SECRET

REQUIRE = "STREAMWARDEN_REQUIRE_CHROMIUM"
SINCE = "2000-01-01T00:00:00Z"

pytestmark = pytest.mark.timeout(180)


def _missing(reason: str) -> None:
    if os.environ.get(REQUIRE) == "1":
        pytest.fail(f"{reason}, but {REQUIRE}=1")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    executable = shutil.which("chromium")
    if executable is None:
        _missing("Chromium is not installed (Debian: apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright  # noqa: PLC0415
    except ImportError:
        _missing("Playwright is not installed (pip install 'streamwarden[test]')")
    # Chromium's sandbox cannot start as root (CI runs as root).
    args = ["--no-sandbox"] if os.geteuid() == 0 else []
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, args=args)
        yield launched
        launched.close()


class Opened:
    """A page opened from a file, with what it logged and requested."""

    def __init__(self, browser: Any, path: Path, **context: Any) -> None:
        self.context = browser.new_context(viewport={"width": 1280, "height": 900}, **context)
        self.page = self.context.new_page()
        self.console: list[str] = []
        self.requests: list[str] = []
        self.failed: list[str] = []
        self.dialogs: list[str] = []
        page = self.page
        page.on("console", lambda m: self.console.append(f"{m.type}: {m.text}"))
        page.on("pageerror", lambda e: self.console.append(f"pageerror: {e}"))
        page.on("request", lambda r: self.requests.append(r.url))
        page.on("requestfailed", lambda r: self.failed.append(r.url))
        page.on("dialog", lambda d: (self.dialogs.append(d.message), d.dismiss()))
        page.goto(path.as_uri(), wait_until="load")


@pytest.fixture(scope="module")
def report(browser, tmp_path_factory) -> Iterator[tuple[Opened, Path, SimHistory, int]]:
    """One report, opened once for the tests of this module (the trail takes a second)."""
    directory = tmp_path_factory.mktemp("html-report")
    url = f"sqlite:///{directory / 'audit.db'}"
    with open_log(url) as log:
        history = run_sim_history(log, Credentials(CANARY_KEY_ID, CANARY_SECRET, paper=True))
    with AuditLog.open(url) as log:
        count = len(log.query())
    target = directory / "report.html"
    assert main(["audit", "report", "--db", url, "--format", "html", "-o", str(target),
                 "--since", SINCE]) == 0
    opened = Opened(browser, target)
    yield opened, target, history, count
    opened.context.close()


def test_loads_nothing_and_logs_no_error(report):
    opened, target, _, _ = report
    assert opened.console == [] and opened.failed == [] and opened.dialogs == []
    assert opened.requests == [target.as_uri()]
    assert opened.page.locator("script, img, iframe, object, embed").count() == 0


def test_summary_numbers_filters_and_verdicts(report):
    opened, _, _, count = report
    page = opened.page

    def metric(name: str) -> str:
        return page.locator(f'[data-metric="{name}"] .value').inner_text()

    assert [metric(n) for n in ("records", "accounts", "connections", "leases", "owners",
                                "reconnects")] == [str(count), "1", "3", "5", "5", "1"]
    assert int(metric("failures")) >= 1
    assert "since = 2000-01-01T00:00:00.000000+00:00" in page.locator("#filters").inner_text()
    chain = page.locator("#chain-verdict").inner_text()
    assert chain.startswith("OK") and f"{count} rows, chain intact" in chain
    assert "no checkpoints configured" in page.locator("#checkpoint-status").inner_text()
    assert page.locator("#generated-at").inner_text().endswith(f"by streamwarden {__version__}")


def test_one_timeline_per_connection_with_owners_reconnect_and_failure(report):
    opened, _, history, _ = report
    page = opened.page
    assert page.locator("article.connection").count() == 3
    assert history.market_data in page.locator("#conn-1 h3").inner_text()
    assert history.trade_updates in page.locator("#conn-2 h3").inner_text()
    for number in (1, 2, 3):
        assert page.locator(f"#conn-{number} svg.chart").is_visible()
    labels = {n: page.locator(f"#conn-{n} text.lease-label").all_text_contents()
              for n in (1, 2, 3)}
    assert labels == {1: ["momentum", "pairs", HOSTILE_OWNER], 2: ["executor"],
                      3: ["late-executor"]}
    reconnect = page.locator("#conn-1 .marker.reconnect")
    assert reconnect.count() == 1 and reconnect.is_visible()
    assert "connection_lost at" in (reconnect.locator("title").text_content() or "")
    failures = page.locator("#conn-3 .marker.failure title").all_text_contents()
    assert any("start_failed" in title and "AuthenticationError" in title
               for title in failures)
    assert page.locator("#overview .marker.reconnect").count() == 1
    assert page.get_by_role("cell", name="quotes AAPL; trades AAPL", exact=True).count() == 1
    assert page.get_by_role("cell", name="orders with client_order_id exec-*",
                            exact=True).count() == 1
    assert page.get_by_role("cell", name="every order", exact=True).count() == 1
    assert page.locator(".legend li").count() >= 9


def test_hostile_owner_is_text(report):
    page = report[0].page
    cells = page.get_by_role("cell", name=HOSTILE_OWNER, exact=True)
    assert cells.count() >= 2  # the owners table and the connection's lease table
    assert page.locator("img").count() == 0


def test_state_diagram_inline(report):
    page = report[0].page
    diagram = page.locator("#diagram .diagram svg")
    assert diagram.count() == 1 and diagram.is_visible()
    assert "Running" in (diagram.text_content() or "")
    box = diagram.bounding_box()
    assert box is not None and box["width"] > 200 and box["height"] > 100


def _boxes(locator: Any) -> list[dict[str, float]]:
    return [box for box in (item.bounding_box() for item in locator.all()) if box is not None]


def test_charts_have_no_cut_bars_or_overlapping_labels(report):
    page = report[0].page
    for chart in page.locator("svg.chart").all():
        frame = chart.bounding_box()
        assert frame is not None
        scale = frame["width"] / WIDTH
        plot_left = frame["x"] + PLOT_START * scale
        for bar in _boxes(chart.locator(".lease-bar, .band rect")):
            assert frame["x"] - 0.5 <= bar["x"] and bar["x"] + bar["width"] <= (
                frame["x"] + frame["width"] + 0.5)
            assert bar["width"] > 0 and bar["height"] > 0
        labels = _boxes(chart.locator("text.lease-label, text.row-label"))
        for label in labels:
            assert frame["x"] <= label["x"] and label["x"] + label["width"] <= plot_left
        rows = sorted(labels, key=lambda box: box["y"])
        for upper, lower in itertools.pairwise(rows):
            assert upper["y"] + upper["height"] <= lower["y"] + 0.5
        ticks = sorted(_boxes(chart.locator("text.tick")), key=lambda box: box["x"])
        assert len(ticks) >= 3
        for left, right in itertools.pairwise(ticks):
            assert left["x"] + left["width"] < right["x"]
        for tick in ticks:
            assert tick["x"] + tick["width"] <= frame["x"] + frame["width"] + 0.5


def test_reads_without_javascript(browser, report):
    _, target, _, count = report
    opened = Opened(browser, target, java_script_enabled=False)
    try:
        assert f"{count} rows, chain intact" in opened.page.locator("#chain-verdict").inner_text()
        assert opened.console == [] and opened.failed == []
    finally:
        opened.context.close()


def test_prints_to_pdf(report, tmp_path):
    page = report[0].page
    target = tmp_path / "report.pdf"
    page.pdf(path=str(target), print_background=True, prefer_css_page_size=True)
    data = target.read_bytes()
    assert data.startswith(b"%PDF-") and len(data) > 20_000
    assert len(re.findall(rb"/Type\s*/Page\b(?!s)", data)) >= 2  # pages, not the page tree
