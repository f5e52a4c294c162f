"""What the browser tests share: Debian's headless Chromium under Playwright, and readers of what the page shows."""
import os
import re
import shutil
from urllib.parse import parse_qs, urlsplit

import pytest
from playwright.sync_api import expect, sync_playwright

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = os.path.join(os.path.dirname(__file__), "artifacts")
AXE = "/static/vendor/axe.min.js"  # vendored, served by the app; the tests inject it, the page never loads it
# Chromium reaches for Google services at start; this machine's closed network refuses them.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
POLL = re.compile(r"/api/analyses/[0-9a-f]{32}(\?.*)?$")  # a poll, with or without since


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium from Debian's package (installed by `make test`), never a downloaded one."""
    assert os.path.exists(CHROMIUM), "Debian's chromium is missing: `make test` installs it"
    expect.set_options(timeout=20_000)  # deadlines for locator waits; a busy machine runs workers and browser
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def context(browser):
    """A fresh browser profile (its own localStorage) at desktop size."""
    context = browser.new_context(viewport={"width": 1100, "height": 900}, accept_downloads=True)
    context.set_default_timeout(20_000)
    yield context
    context.close()


@pytest.fixture
def page(context):
    return context.new_page()


def submit(page, symbols: str) -> str:
    """Type the symbols, submit, and return the analysis' status URL from the API's answer."""
    page.fill("#symbols", symbols)
    with page.expect_response(lambda r: r.url.endswith("/api/analyses") and r.request.method == "POST") as created:
        page.click("#submit")
    return created.value.json()["status_url"]


def wait_for_end(page, total: int) -> None:
    # Locator waits, not wait_for_function: polling a string predicate needs eval, which the page's CSP forbids.
    expect(page.locator("#progress-text")).to_have_text(f"{total} / {total}")
    expect(page.locator("#download-csv")).to_be_enabled()


def analyse(page, web_server: str, symbols: str, total: int) -> str:
    page.goto(web_server)
    status_url = submit(page, symbols)
    wait_for_end(page, total)
    return status_url


def record_posts(page) -> list:
    """Every POST /api/analyses the page makes from now on."""
    posts = []
    page.on("request", lambda r: posts.append(r) if r.method == "POST" and r.url.endswith("/api/analyses") else None)
    return posts


def record_problems(page) -> list[str]:
    """Console errors, page errors and HTTP errors (a missing favicon would be one) from now on."""
    problems = []
    page.on("console", lambda m: problems.append(f"console: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("response", lambda r: problems.append(f"{r.status} {r.url}") if r.status >= 400 else None)
    return problems


def query(page) -> dict[str, str]:
    return {name: values[0] for name, values in parse_qs(urlsplit(page.url).query).items()}


def chart_pixels(page, symbol: str) -> int:
    """How many pixels of the symbol's chart canvas are painted (0 if no chart)."""
    return page.evaluate(
        """symbol => {
            const canvas = document.querySelector(`li[data-symbol="${symbol}"] canvas`);
            if (!canvas || !Chart.getChart(canvas)) return 0;
            const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
            let painted = 0;
            for (let i = 3; i < data.length; i += 4) if (data[i] > 0) painted++;
            return painted;
        }""",
        symbol,
    )


def chart(page, selector: str) -> dict | None:
    """What Chart.js drew on the canvas at `selector`: visible x span (label indices), y scale type, datasets."""
    return page.evaluate(
        """selector => {
            const chart = Chart.getChart(document.querySelector(selector));
            if (!chart) return null;
            return {min: chart.scales.x.min, max: chart.scales.x.max, labels: chart.data.labels,
                    y: chart.scales.y.type, datasets: chart.data.datasets.map(d => d.label),
                    first: chart.data.datasets.map(d => d.data.find(v => v !== null)),
                    points: chart.data.datasets.map(d => d.data.filter(v => v !== null).length)};
        }""",
        selector,
    )


def table_values(page, symbol: str) -> list[tuple[str, str]]:
    rows = page.locator(f'li[data-symbol="{symbol}"] table.numbers tbody tr')
    return [tuple(rows.nth(i).locator("td").all_inner_texts()) for i in range(rows.count())]


def expected_table(result: dict) -> list[tuple[str, str, str]]:
    """The numbers table as the page must show it: the last close, then each forecast day with its range."""
    rows = [(result["dates"][-1], f"{result['last_close']:.2f}", "last close")]
    return rows + [(d, f"{p:.2f}", f"{lo:.2f}\u00a0–\u00a0{hi:.2f}") for d, p, lo, hi in zip(
        result["prediction_dates"], result["predictions"], result["prediction_lower"], result["prediction_upper"])]


WIDTHS = {"1280px": {"width": 1280, "height": 900}, "390px": {"width": 390, "height": 844}}


@pytest.fixture(params=WIDTHS.values(), ids=WIDTHS.keys())
def sized_page(browser, request):
    """A fresh page at each width the page is checked at: a desktop's and a phone's."""
    viewport = request.param
    context = browser.new_context(viewport=viewport, is_mobile=viewport["width"] < 600, accept_downloads=True)
    context.set_default_timeout(20_000)
    yield context.new_page()
    context.close()
