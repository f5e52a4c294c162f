"""What a newcomer sees first, in a real browser at a desktop's and a phone's width (issue 28).

The forecast the page leads with lies inside the range shown beside it; the form speaks its own words;
controls line up and numbers never break across lines; nothing clickable acts on nothing; the forecast
line starts at the last close; log-scale ticks are even; an unreachable price source says what to check.
"""
import json
import math
import re

import numpy as np
import pytest
from playwright.sync_api import expect

from tests.browser import record_posts, submit, table_values, wait_for_end
from tests.conftest import free_port, http_json, weekdays, write_prices

pytestmark = pytest.mark.browser

CONTROLS = ("window", "horizon", "method", "level")
CHART_CONTROLS = ('[data-range="1M"]', '[data-range="1Y"]', "#log-scale", "#download-csv", "#download-json")
API_WORDS = re.compile(r'input should|list should|"(symbols|window|horizon|method|level)"|\[\d+\]')  # pydantic's, JSON's


def accelerating(count: int = 252) -> np.ndarray:
    """Closes whose growth keeps speeding up: nearly every past outcome lies above its path, the range's hardest case."""
    return np.round(50 * np.exp(4e-5 * np.arange(count) ** 2), 4)


def numbers(text: str) -> list[float]:
    return [float(value) for value in re.findall(r"\d+\.\d+", text)]


def test_the_page_leads_with_the_anchored_forecast_inside_the_range_beside_it(sized_page, web_server, workers,
                                                                             price_dir):
    page = sized_page
    write_prices(price_dir, "ACCEL", weekdays("2025-01-02", 252), accelerating())
    page.goto(web_server)
    assert page.input_value("#method") == "anchored", "the method that erred least on real prices is the default"
    assert page.locator("#method option").first.get_attribute("value") == "anchored", "and is listed first"
    expect(page.locator("#method-meaning")).to_have_text("anchored: the fitted line's slope from the last close.")
    posts = record_posts(page)
    submit(page, "ACCEL")
    wait_for_end(page, 1)
    assert posts[0].post_data_json["method"] == "anchored"
    rows = table_values(page, "ACCEL")[1:]
    assert len(rows) == 5
    for date, shown, range_text in rows:
        low, high = numbers(range_text)
        assert low <= float(shown) <= high, f"{date}: the forecast {shown} lies outside its range {range_text}"
    drawn = page.evaluate("""() => {
        const chart = Chart.getChart(document.querySelector('li[data-symbol="ACCEL"] canvas'));
        const series = (label) => chart.data.datasets.find((d) => d.label === label).data.filter((v) => v !== null);
        return [series("Forecast"), series("Likely range (low)"), series("Likely range (high)")];
    }""")
    assert all(low <= value <= high for value, low, high in zip(*drawn)), "the chart's line stays in its band"
    seed = http_json("POST", f"{web_server}/get_trends", {"symbols": ["ACCEL"]})["results"][0]
    assert seed["method"] == "trend", "POST /get_trends keeps the seed's default"


def form_error(page) -> str:
    return page.locator("#form-error").inner_text()


def test_the_form_says_what_is_wrong_in_its_own_words_and_sends_nothing(sized_page, web_server):
    page = sized_page
    page.goto(web_server)
    posts = record_posts(page)
    cases = [
        ("   ,, ", "20", "5", "symbols", "Enter at least one symbol, for example AAPL, MSFT."),
        (" ".join(f"S{i}" for i in range(101)), "20", "5", "symbols", "Enter at most 100 symbols at once; you entered 101."),
        ("AAPL", "300", "5", "window",
         'The moving-average window is a whole number of trading days from 1 to 250; you entered "300".'),
        ("AAPL", "2.5", "5", "window",
         'The moving-average window is a whole number of trading days from 1 to 250; you entered "2.5".'),
        ("AAPL", "20", "", "horizon",
         "The forecast horizon is a whole number of trading days from 1 to 30; you entered nothing."),
        ("AAPL, MS/FT", "20", "5", "symbols", '"MS/FT" is not a ticker: use letters, digits and . - = (and ^ in front '
                                              "for an index), at most 15 characters, for example BRK-B or ^GSPC."),
    ]
    for symbols, window, horizon, field, message in cases:
        page.fill("#symbols", symbols)
        page.fill("#window", window)
        page.fill("#horizon", horizon)
        page.click("#submit")
        expect(page.locator("#form-error")).to_have_text(message)
        assert not API_WORDS.search(form_error(page)), form_error(page)
        assert page.evaluate("document.activeElement.id") == field, "the field to fix has the focus"
        assert page.get_attribute(f"#{field}", "aria-invalid") == "true"
    assert posts == [], "nothing the API would refuse is sent"

    # A refusal the form did not foresee (here: the request changed on its way) still names fields as the form does.
    def altered(route):
        route.continue_(post_data=json.dumps({**route.request.post_data_json, "window": 300, "symbols": ["AAPL", "x/y"]}))

    page.route("**/api/analyses", altered)
    page.fill("#window", "20")
    page.fill("#horizon", "5")
    page.fill("#symbols", "AAPL")
    page.click("#submit")
    expect(page.locator("#form-error")).to_contain_text("Symbol 2 is not a ticker")
    expect(page.locator("#form-error")).to_contain_text("Moving-average window")
    assert '"window"' not in form_error(page) and '"symbols"' not in form_error(page)


def test_the_options_line_up_and_no_number_breaks_across_lines(sized_page, web_server, workers, prices):
    page = sized_page
    page.goto(web_server)
    boxes = {name: page.locator(f"#{name}").bounding_box() for name in CONTROLS}
    for a in CONTROLS:
        for b in CONTROLS:
            same_row = boxes[a]["y"] < boxes[b]["y"] + boxes[b]["height"] and boxes[b]["y"] < boxes[a]["y"] + boxes[a]["height"]
            if same_row:
                assert abs((boxes[a]["y"] + boxes[a]["height"]) - (boxes[b]["y"] + boxes[b]["height"])) <= 1, (a, b, boxes)
    unfit = page.evaluate("""() => [...document.querySelectorAll('select')].flatMap((select) => {
        const style = getComputedStyle(select);
        const context = document.createElement('canvas').getContext('2d');
        context.font = `${style.fontWeight} ${style.fontSize} ${style.fontFamily}`;
        const room = select.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight) - 20;  // the arrow
        return [...select.options].filter((o) => context.measureText(o.text).width > room).map((o) => o.text);
    })""")
    assert unfit == [], f"option text cut off: {unfit}"

    submit(page, "AAPL, MSFT")
    wait_for_end(page, 2)
    broken = page.evaluate("""() => [...document.querySelectorAll('li[data-symbol="AAPL"] table.numbers :is(th, td)')]
        .filter((cell) => {
            const range = document.createRange();
            range.selectNodeContents(cell);
            return new Set([...range.getClientRects()].filter((r) => r.width > 0).map((r) => Math.round(r.top))).size > 1;
        }).map((cell) => cell.textContent)""")
    assert broken == [], f"cells broken across lines: {broken}"
    assert page.locator('li[data-symbol="AAPL"] .range-head').inner_text() == "80\u00a0% likely range"
    fits = page.eval_on_selector('li[data-symbol="AAPL"] .table-box', "box => box.scrollWidth <= box.clientWidth")
    assert fits, "the table fits its card"
    assert page.evaluate("document.documentElement.scrollWidth") <= page.viewport_size["width"]


def test_controls_that_act_on_charts_stay_disabled_until_a_symbol_succeeds(sized_page, web_server, workers, prices):
    page = sized_page
    page.goto(web_server)
    submit(page, "NOPE, NOPE2")
    expect(page.locator("#notice")).to_have_text("No symbol could be analysed; each row says why.")
    for control in CHART_CONTROLS:
        expect(page.locator(control)).to_be_disabled()
    expect(page.locator("#advice")).to_be_hidden()  # unknown symbols: nothing for the network to fix
    submit(page, "AAPL")
    wait_for_end(page, 1)
    for control in CHART_CONTROLS:
        expect(page.locator(control)).to_be_enabled()


def test_the_forecast_starts_at_the_last_close_and_log_ticks_are_even(sized_page, web_server, workers, prices):
    page = sized_page
    page.goto(web_server)
    submit(page, "AAPL")
    wait_for_end(page, 1)
    joined = page.evaluate("""() => {
        const chart = Chart.getChart(document.querySelector('li[data-symbol="AAPL"] canvas'));
        const at = chart.data.labels.length - 1 - chart.data.datasets[2].data.filter((v) => v !== null).length + 1;
        return chart.data.datasets.map((d) => [d.label, d.data[at]]);
    }""")
    last_close = float(prices["AAPL"][-1])
    labels = ["Close", "20-day moving average", "Forecast", "Likely range (low)", "Likely range (high)"]
    assert [label for label, _ in joined] == labels
    assert [value for label, value in joined if label != labels[1]] == [last_close] * 4, "all four meet at the last close"

    page.click("#log-scale")
    for span in ("1M", "1Y"):
        page.click(f'[data-range="{span}"]')
        ticks = page.evaluate("""() => Chart.getChart(document.querySelector('li[data-symbol="AAPL"] canvas'))
            .scales.y.ticks.map((t) => [t.value, t.label])""")
        assert len(ticks) >= 3 and all(label for _, label in ticks), ticks
        steps = np.diff([math.log(value) for value, _ in ticks])
        assert np.all(np.abs(steps / np.median(steps) - 1) < 0.1), f"{span}: uneven log ticks {ticks}"


def test_an_unreachable_price_source_says_what_to_check_and_that_make_demo_needs_no_network(
        sized_page, web_server, redis_server, start_workers, tmp_path):
    page = sized_page
    start_workers(redis_server.url, 1, PRICE_SOURCE="yahoo", YAHOO_URL=f"http://127.0.0.1:{free_port()}",
                  YAHOO_RETRIES=0, YFINANCE_CACHE_DIR=tmp_path / "yfinance")
    page.goto(web_server)
    status_url = submit(page, "AAPL, MSFT")
    expect(page.locator("#progress-text")).to_have_text("2 / 2")
    advice = page.locator("#advice")
    expect(advice).to_be_visible()
    expect(advice).to_contain_text("query2.finance.yahoo.com")
    expect(advice).to_contain_text("make demo")
    reasons = [entry["result"]["reason"] for entry in http_json("GET", web_server + status_url)["symbols"]]
    assert reasons == ["source_unavailable", "source_unavailable"]
