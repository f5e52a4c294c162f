"""The page in a real browser: Debian's headless Chromium driven by Playwright, against the real app."""
import csv
import io
import json
import os
import re
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pytest
from playwright.sync_api import expect

from tests.browser import (
    ARTIFACTS,
    AXE,
    POLL,
    analyse,
    chart,
    chart_pixels,
    expected_table,
    query,
    record_posts,
    record_problems,
    submit,
    table_values,
    wait_for_end,
)
from tests.conftest import http_json, weekdays, write_prices

pytestmark = pytest.mark.browser

def test_an_analysis_shows_progress_charts_numbers_and_errors(page, web_server, workers, prices):
    problems = record_problems(page)
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
        assert table_values(page, symbol) == expected_table(result)
        naive = result["backtest"]["naive_mape"][4]
        assert f"(naive, repeating the last close: {naive:.1f} %)" in row.locator(".track-record").inner_text()
        assert row.locator(".source").inner_text() == "data: CSV files"
        assert row.locator(".adjusted").inner_text() == ("adjusted closes" if result["adjusted"] else "unadjusted closes")
        labels = chart(page, f'li[data-symbol="{symbol}"] canvas')["datasets"]
        assert labels == ["Close", "20-day moving average", "Forecast", "Likely range (low)", "Likely range (high)"]
        row.locator(".explain summary").click()
        assert "Every future day = the last close" in row.locator(".explain").inner_text()
    nope = page.locator('li[data-symbol="NOPE"]')
    assert nope.locator(".state").inner_text() == "error"
    assert "no price file" in nope.locator(".message").inner_text()
    assert chart_pixels(page, "NOPE") == 0
    assert query(page) == {"symbols": "AAPL,MSFT,NOPE", "window": "20", "horizon": "5", "method": "anchored",
                           "level": "0.8", "id": status_url.rsplit("/", 1)[1]}
    assert problems == [], "no console errors, no failed requests (the favicon included)"


def test_a_pasted_link_restores_a_finished_analysis_without_recomputing(browser, page, web_server, workers, prices):
    analyse(page, web_server, "AAPL MSFT", 2)
    link, shown = page.url, table_values(page, "MSFT")
    other = browser.new_context(viewport={"width": 1100, "height": 900})  # someone else, who never ran it
    pasted = other.new_page()
    pasted.set_default_timeout(20_000)
    posts = record_posts(pasted)
    pasted.goto(link)
    wait_for_end(pasted, 2)
    assert table_values(pasted, "MSFT") == shown
    assert pasted.input_value("#symbols") == "AAPL, MSFT"
    pasted.reload()
    wait_for_end(pasted, 2)
    assert table_values(pasted, "MSFT") == shown and pasted.url == link
    assert posts == [], "opened from the server's results, nothing computed again"
    other.close()


def test_an_expired_link_runs_its_query_again(page, web_server, workers, prices):
    posts = record_posts(page)
    page.goto(f"{web_server}/?symbols=AAPL&window=10&horizon=3&method=anchored&level=0.9&id={'0' * 32}")
    wait_for_end(page, 1)
    assert [post.post_data_json for post in posts] == [
        {"symbols": ["AAPL"], "window": 10, "horizon": 3, "method": "anchored", "level": 0.9}]
    assert query(page)["id"] != "0" * 32 and len(table_values(page, "AAPL")) == 1 + 3
    assert page.input_value("#method") == "anchored" and page.input_value("#level") == "0.9"


def test_back_and_forward_show_the_analyses_of_those_urls(page, web_server, workers, prices):
    analyse(page, web_server, "AAPL", 1)
    first = page.url
    submit(page, "MSFT BRK-B")
    wait_for_end(page, 2)
    posts = record_posts(page)
    page.go_back()
    expect(page.locator("li.symbol")).to_have_count(1)
    wait_for_end(page, 1)
    assert page.url == first and page.input_value("#symbols") == "AAPL"
    page.go_forward()
    expect(page.locator('li[data-symbol="BRK-B"] .state')).to_have_text("done")
    assert page.input_value("#symbols") == "MSFT, BRK-B"
    page.go_back()
    page.go_back()
    expect(page.locator("#analysis")).to_be_hidden()
    assert posts == []


def test_the_history_lists_reopens_and_clears_analyses(page, web_server, workers, prices):
    analyse(page, web_server, "AAPL, MSFT", 2)
    opened = page.url
    page.goto(web_server)  # a later visit, without the link
    item = page.locator("#recent-list .recent-item")
    expect(item).to_have_count(1)
    expect(item).to_contain_text("Reopen AAPL, MSFT")
    posts = record_posts(page)
    item.click()
    wait_for_end(page, 2)
    assert page.url == opened and posts == [], "reopened by id while the server keeps it"
    # An entry older than RESULT_TTL runs again.
    page.evaluate("""() => {
        const list = JSON.parse(localStorage.getItem('trends:recent'));
        list[0].startedAt = list[0].endedAt = Date.now() - 3600 * 1000;
        localStorage.setItem('trends:recent', JSON.stringify(list));
    }""")
    page.goto(web_server)
    expect(item).to_contain_text("Run again AAPL, MSFT")
    item.press("Enter")
    wait_for_end(page, 2)
    assert len(posts) == 1 and query(page)["id"] != query_id(opened)
    page.click("#clear-recent")
    expect(page.locator("#recent")).to_be_hidden()
    page.goto(web_server)  # module scripts have run by the load event goto waits for
    assert page.locator("#recent").is_hidden()


def query_id(url: str) -> str:
    return parse_qs(urlsplit(url).query)["id"][0]


def test_range_buttons_log_scale_and_the_compare_chart(page, web_server, workers, prices):
    analyse(page, web_server, "AAPL MSFT NOPE", 3)
    aapl = 'li[data-symbol="AAPL"] canvas'
    drawn = chart(page, aapl)
    assert drawn["labels"][drawn["max"]] == drawn["labels"][-1], "the forecast is always in view"
    assert drawn["max"] - drawn["min"] + 1 == 21 + 5, "horizon 5: one month, so the forecast gets a fifth of the width"
    expect(page.locator('[data-range="1M"]')).to_have_attribute("aria-pressed", "true")
    spans = {}
    for name in ("1Y", "6M", "3M"):
        page.click(f'[data-range="{name}"]')
        drawn = chart(page, aapl)
        spans[name] = drawn["max"] - drawn["min"] + 1
    assert spans == {"1Y": 252 + 5, "6M": 126 + 5, "3M": 63 + 5}

    compare = chart(page, "#compare canvas")
    assert compare["datasets"] == ["AAPL", "MSFT"], "one line per finished symbol, none for NOPE"
    assert compare["first"] == [100, 100], "each starts at 100 at the start of the range"
    assert len(compare["labels"]) == 63 + 5 and compare["points"] == [68, 68], "closes in view and the forecast"

    page.click("#log-scale")
    assert chart(page, aapl)["y"] == chart(page, "#compare canvas")["y"] == "logarithmic"
    page.click("#log-scale")
    assert chart(page, aapl)["y"] == "linear"


def test_downloads_carry_everything_shown_and_are_named_after_the_symbols(page, web_server, workers, prices):
    status_url = analyse(page, web_server, "AAPL, MSFT, NOPE", 3)
    api = {entry["symbol"]: entry["result"] for entry in http_json("GET", web_server + status_url)["symbols"]}
    with page.expect_download() as caught:
        page.click("#download-csv")
    download = caught.value
    assert re.fullmatch(r"trends_AAPL-MSFT-NOPE_\d{4}-\d{2}-\d{2}\.csv", download.suggested_filename)
    with open(download.path(), newline="") as file:
        rows = list(csv.DictReader(io.StringIO(file.read())))
    for column in ("likely_low", "likely_high", "mape", "mae", "naive_mape", "naive_mae", "source", "adjusted",
                   "method", "window", "horizon", "level"):
        assert column in rows[0], f"no {column} column"
    aapl = api["AAPL"]
    forecast = [row for row in rows if row["symbol"] == "AAPL" and row["kind"] == "forecast"]
    assert [float(row["likely_high"]) for row in forecast] == aapl["prediction_upper"]
    assert [float(row["naive_mae"]) for row in forecast] == aapl["backtest"]["naive_mae"]
    assert [row["horizon_day"] for row in forecast] == ["1", "2", "3", "4", "5"]
    closes = [row for row in rows if row["symbol"] == "AAPL" and row["kind"] == "close"]
    assert [float(row["close"]) for row in closes] == aapl["closes"] and closes[-1]["source"] == "csv"
    assert [row["error"] for row in rows if row["symbol"] == "NOPE"] == [api["NOPE"]["error"]]

    with page.expect_download() as caught:
        page.click("#download-json")
    assert caught.value.suggested_filename.endswith(".json")
    with open(caught.value.path()) as file:
        saved = json.load(file)
    assert saved["analysis"]["level"] == 0.8 and [r["symbol"] for r in saved["results"]] == ["AAPL", "MSFT", "NOPE"]
    assert saved["results"][0] == aapl


def test_a_trend_far_from_the_last_close_offers_the_anchored_method(page, web_server, workers, price_dir):
    days = weekdays("2025-01-02", 252)
    write_prices(price_dir, "JUMP", days, np.r_[np.full(200, 50.0), np.full(52, 80.0)])  # the line lags far behind
    page.goto(web_server)
    page.select_option("#method", "trend")
    submit(page, "JUMP")
    wait_for_end(page, 1)
    note = page.locator('li[data-symbol="JUMP"] .far-note')
    expect(note).to_contain_text("below the last close")
    expect(note).to_contain_text("lies outside the likely range on 5 of its 5 days")
    posts = record_posts(page)
    note.get_by_role("button", name="Switch to the anchored method").click()
    wait_for_end(page, 1)
    expect(page.locator('li[data-symbol="JUMP"] .far-note')).to_be_hidden()
    assert posts[0].post_data_json["method"] == "anchored" and query(page)["method"] == "anchored"
    assert page.input_value("#method") == "anchored"
    first = float(page.locator('li[data-symbol="JUMP"] td').nth(4).inner_text())
    assert abs(first / 80 - 1) < 0.01, "anchored starts from the last close"


def test_the_range_coverage_is_said_only_when_the_server_measured_it(page, web_server, workers, prices):
    def with_interval(route):
        answer = route.fetch()
        body = answer.json()
        for entry in body["symbols"]:  # both shapes, whichever the server gives now
            if entry.get("result") and entry["symbol"] == "AAPL":
                entry["result"]["interval"] = {"level": 0.8, "coverage": 0.6}  # the words follow the measurement
            elif entry.get("result"):
                entry["result"].pop("interval", None)
        route.fulfill(response=answer, json=body)

    page.route(POLL, with_interval)
    analyse(page, web_server, "AAPL MSFT", 2)
    assert page.locator('li[data-symbol="AAPL"] .coverage').inner_text() == (
        "80 % range: in this symbol's past year, 6 in 10 outcomes fell in ranges built this way (60 %).")
    expect(page.locator('li[data-symbol="MSFT"] .coverage')).to_be_hidden()
    explained = page.locator('li[data-symbol="AAPL"] .explain').text_content()  # closed: inner_text skips it
    assert "the same for every method" in explained and "The trend line can lie outside it" in explained


def test_polls_after_the_first_result_carry_only_new_results(page, web_server, redis_server, start_workers):
    """100 symbols: each result crosses the network once, in the poll after it ended."""
    start_workers(redis_server.url, 2, PRICE_SOURCE="synthetic", SYNTHETIC_LATENCY_MS=40)  # results over several polls
    polls = []
    page.on("response", lambda r: polls.append(r) if r.request.method == "GET" and POLL.search(urlsplit(r.url).path) else None)
    symbols = [f"S{i:03d}" for i in range(100)]
    status_url = analyse(page, web_server, " ".join(symbols), 100)

    sizes = {entry["symbol"]: len(json.dumps(entry["result"], separators=(",", ":")))
             for entry in http_json("GET", web_server + status_url)["symbols"]}
    carried, cursor = [], ""
    for response in polls:
        body = response.json()
        assert parse_qs(urlsplit(response.url).query).get("since", [""])[0] == cursor, "each poll passes the last cursor"
        cursor = body["cursor"]
        new = [entry["symbol"] for entry in body["symbols"] if "result" in entry]
        assert len(body["symbols"]) == 100, "every symbol keeps its state"
        assert len(response.body()) <= 8_000 + 1.02 * sum(sizes[symbol] for symbol in new), "no result sent again"
        carried.append(new)
    every = [symbol for new in carried for symbol in new]
    assert len(every) == 100 and set(every) == set(symbols), "each result carried exactly once"
    assert sum(1 for new in carried if new) >= 2, "results arrived over several polls"
    expect(page.locator("li.symbol .state", has_text="done")).to_have_count(100)


def run_axe(page, web_server: str) -> list[str]:
    """The serious and critical axe-core violations on the page as it is now."""
    page.add_script_tag(url=web_server + AXE)  # same origin, so the page's CSP allows it
    violations = page.evaluate("""async () => {
        const result = await axe.run(document, {resultTypes: ['violations']});
        return result.violations.map(v => ({id: v.id, impact: v.impact, nodes: v.nodes.map(n => n.target.join(' '))}));
    }""")
    return [f"{v['id']} ({v['impact']}): {v['nodes'][:3]}" for v in violations if v["impact"] in ("serious", "critical")]


def test_axe_finds_nothing_serious_in_light_or_dark_and_screenshots(browser, web_server, workers, prices):
    os.makedirs(ARTIFACTS, exist_ok=True)
    for width, height, name in ((1280, 900, "desktop"), (390, 844, "phone")):
        context = browser.new_context(viewport={"width": width, "height": height}, is_mobile=width < 600)
        page = context.new_page()
        page.set_default_timeout(20_000)
        analyse(page, web_server, "AAPL, MSFT, NOPE", 3)
        page.locator('li[data-symbol="AAPL"] .explain summary').click()
        # Down to AAPL's numbers: PNGs small enough for the docs (docs/page.png, docs/page-390.png are copies).
        bottom = page.eval_on_selector('li[data-symbol="AAPL"] .track-record',
                                       "p => p.getBoundingClientRect().bottom + window.scrollY")
        clip = {"x": 0, "y": 0, "width": width, "height": bottom + 16}
        for scheme in ("light", "dark"):
            page.emulate_media(color_scheme=scheme)
            assert run_axe(page, web_server) == [], f"axe at {width} px, {scheme}"
            assert page.evaluate("document.documentElement.scrollWidth") <= width
            page.screenshot(path=os.path.join(ARTIFACTS, f"page-{width}-{scheme}.png"), full_page=True, clip=clip)
        context.close()


def test_a_second_submit_shows_only_the_new_analysis(page, web_server, workers, prices):
    analyse(page, web_server, "AAPL MSFT", 2)
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
    assert urlsplit(page.url).query == "", "a refused query is not put in the URL"


def test_synthetic_prices_are_labelled_on_the_page(page, web_server, redis_server, start_workers):
    """With PRICE_SOURCE=synthetic the row says the numbers are not real prices."""
    start_workers(redis_server.url, PRICE_SOURCE="synthetic")
    analyse(page, web_server, "AAPL", 1)
    assert "not real prices" in page.locator('li[data-symbol="AAPL"] .source').inner_text()


def test_the_page_fits_a_phone_and_works_from_the_keyboard(browser, web_server, workers, prices):
    context = browser.new_context(viewport={"width": 375, "height": 740}, is_mobile=True)
    page = context.new_page()
    page.goto(web_server)
    focused = lambda: page.evaluate("document.activeElement.id || document.activeElement.textContent")  # noqa: E731
    page.keyboard.press("Tab")
    assert focused() == "symbols"
    page.keyboard.type("AAPL")
    for control in ("window", "horizon", "method", "level", "submit"):
        page.keyboard.press("Tab")
        assert focused() == control
    page.keyboard.press("Enter")
    wait_for_end(page, 1)
    assert page.evaluate("document.documentElement.scrollWidth") <= 375
    for control in ("symbols", "window", "horizon", "method", "level"):
        assert page.evaluate(f"document.getElementById('{control}').labels.length") == 1
    # On from the submit button: the recent analysis, clearing history, the range buttons.
    stops = []
    for _ in range(4):
        page.keyboard.press("Tab")
        stops.append(focused())
    assert stops[0].startswith("Reopen AAPL") and stops[1:] == ["clear-recent", "1M", "3M"]
    page.keyboard.press("Enter")
    expect(page.locator('[data-range="3M"]')).to_have_attribute("aria-pressed", "true")
    page.focus("#log-scale")
    page.keyboard.press("Space")
    expect(page.locator("#log-scale")).to_have_attribute("aria-pressed", "true")
    assert chart(page, 'li[data-symbol="AAPL"] canvas')["y"] == "logarithmic"
    page.focus('li[data-symbol="AAPL"] .explain summary')
    page.keyboard.press("Enter")
    expect(page.locator('li[data-symbol="AAPL"] .explain dl')).to_be_visible()
    assert page.evaluate("getComputedStyle(document.activeElement).outlineStyle") == "solid", "visible focus"
    context.close()
