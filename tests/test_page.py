"""The page in a real browser: Debian's headless Chromium driven by Playwright, against the real app."""
import os
import shutil

import pytest
from playwright.sync_api import expect, sync_playwright

from tests.conftest import http_json

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = os.path.join(os.path.dirname(__file__), "artifacts")
# Chromium reaches for Google services at start; this machine's closed network refuses them.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium from Debian's package (installed by `make test`), never a downloaded one."""
    assert os.path.exists(CHROMIUM), "Debian's chromium is missing: `make test` installs it"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1100, "height": 900})
    page = context.new_page()
    page.set_default_timeout(20_000)
    yield page
    context.close()


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


def table_values(page, symbol: str) -> list[tuple[str, str]]:
    rows = page.locator(f'li[data-symbol="{symbol}"] table.numbers tbody tr')
    return [tuple(rows.nth(i).locator("td").all_inner_texts()) for i in range(rows.count())]


def test_an_analysis_shows_progress_charts_numbers_and_errors(page, web_server, workers, prices):
    page.goto(web_server)
    assert page.get_attribute("#symbols", "placeholder") == "AAPL, GOOG, MSFT"
    status_url = submit(page, "AAPL, msft\nNOPE")
    wait_for_end(page, 3)

    assert page.eval_on_selector("#progress", "p => [p.value, p.max]") == [3, 3]
    api = {entry["symbol"]: entry for entry in http_json("GET", web_server + status_url)["symbols"]}
    for symbol in ("AAPL", "MSFT"):
        row = page.locator(f'li[data-symbol="{symbol}"]')
        assert row.locator(".state").inner_text() == "done"
        assert chart_pixels(page, symbol) > 1000, f"no chart drawn for {symbol}"
        result = api[symbol]["result"]
        expected = [(f"{result['dates'][-1]} (last close)", f"{result['last_close']:.2f}", "")]
        expected += [(f"{d} (forecast)", f"{p:.2f}", f"{lo:.2f} – {hi:.2f}") for d, p, lo, hi in zip(
            result["prediction_dates"], result["predictions"], result["prediction_lower"], result["prediction_upper"])]
        assert table_values(page, symbol) == expected
        naive = result["backtest"]["naive_mape"][4]
        assert f"(naive, repeating the last close: {naive:.1f} %)" in row.locator(".track-record").inner_text()
        assert row.locator(".source").inner_text() == "data: CSV files"
    nope = page.locator('li[data-symbol="NOPE"]')
    assert nope.locator(".state").inner_text() == "error"
    assert "no price file" in nope.locator(".message").inner_text()
    assert chart_pixels(page, "NOPE") == 0
    os.makedirs(ARTIFACTS, exist_ok=True)
    page.screenshot(path=os.path.join(ARTIFACTS, "analysis.png"), full_page=True)


def test_a_second_submit_shows_only_the_new_analysis(page, web_server, workers, prices):
    page.goto(web_server)
    submit(page, "AAPL MSFT")
    wait_for_end(page, 2)
    submit(page, "BRK-B")
    wait_for_end(page, 1)
    assert page.locator("li.symbol").evaluate_all("rows => rows.map(r => r.dataset.symbol)") == ["BRK-B"]


def test_a_lost_connection_shows_a_retry_notice_then_recovers(page, web_server, workers, prices):
    page.goto(web_server)
    page.route("**/api/analyses/*", lambda route: route.abort())
    submit(page, "AAPL")
    expect(page.locator("#notice")).to_contain_text("retrying")
    page.unroute("**/api/analyses/*")
    wait_for_end(page, 1)
    assert "retrying" not in page.inner_text("#notice")


def test_bad_input_shows_the_servers_message_and_starts_nothing(page, web_server, redis_client):
    page.goto(web_server)
    page.fill("#symbols", "AAPL, <b>x</b>")
    page.click("#submit")
    expect(page.locator("#form-error")).to_contain_text("not a ticker")
    assert page.locator("#form-error b").count() == 0, "server text must not become markup"
    assert page.locator("#analysis").is_hidden()


def test_synthetic_prices_are_labelled_on_the_page(page, web_server, redis_server, start_workers):
    """With PRICE_SOURCE=synthetic the row says the numbers are not real prices."""
    start_workers(redis_server.url, PRICE_SOURCE="synthetic")
    page.goto(web_server)
    submit(page, "AAPL")
    wait_for_end(page, 1)
    assert "not real prices" in page.locator('li[data-symbol="AAPL"] .source').inner_text()


def test_the_page_fits_a_phone_and_works_from_the_keyboard(browser, web_server, workers, prices):
    context = browser.new_context(viewport={"width": 375, "height": 740}, is_mobile=True)
    page = context.new_page()
    page.goto(web_server)
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "symbols"
    page.keyboard.type("AAPL")
    for control in ("window", "horizon", "method", "submit"):
        page.keyboard.press("Tab")
        assert page.evaluate("document.activeElement.id") == control
    page.keyboard.press("Enter")
    wait_for_end(page, 1)
    assert page.evaluate("document.documentElement.scrollWidth") <= 375
    for control in ("symbols", "window", "horizon", "method"):
        assert page.evaluate(f"document.getElementById('{control}').labels.length") == 1
    page.screenshot(path=os.path.join(ARTIFACTS, "phone.png"), full_page=True)
    context.close()
