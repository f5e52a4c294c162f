// Charts (Chart.js 4, the vendored UMD build, on a category axis of ISO dates): one per symbol, and one
// comparing all finished symbols. The range buttons and the log toggle apply to every chart at once.
/* global Chart */

// Trading days per range button; the forecast is always shown after them.
const RANGE_DAYS = { "1M": 21, "3M": 63, "6M": 126, "1Y": Infinity };
// By default the forecast gets at least this share of the width, so it and its band read.
const MIN_FORECAST_SHARE = 0.125;

export const view = { range: "1M", log: false, chosen: false };
const symbolCharts = new Map(); // canvas → { chart, result, level }
let compare = null; // { canvas, results, chart }

export function defaultRange(horizon) {
  // The widest range whose forecast still gets MIN_FORECAST_SHARE of the width; 1M at least.
  const fits = Object.keys(RANGE_DAYS).filter((name) => horizon / (RANGE_DAYS[name] + horizon) >= MIN_FORECAST_SHARE);
  return fits.length ? fits[fits.length - 1] : "1M";
}

function theme() {
  // Colours live in style.css (light and dark); a canvas cannot read CSS itself.
  const css = getComputedStyle(document.documentElement);
  const read = (name) => css.getPropertyValue(name).trim();
  return {
    text: read("--muted"), grid: read("--grid"), close: read("--chart-close"), average: read("--chart-average"),
    forecast: read("--chart-forecast"), band: read("--chart-band"), palette: read("--chart-palette").split(/\s+/),
  };
}

// A price as the page shows it everywhere, in the charts and in the rows; nothing for a missing one.
export const price = (value) => (value === null || value === undefined ? "" : Number(value).toFixed(2));

// Log-axis ticks: about this many, evenly spaced in log terms (Chart.js' own 1-2-5 choice of labels is irregular there).
const LOG_TICKS = 6;

export function logTicks(min, max, count = LOG_TICKS) {
  // Steps of a "nice" size in log10 (1, 2, 2.5 or 5 × 10^k), each tick rounded to the digits its step needs.
  const [low, high] = [Math.log10(min), Math.log10(max)];
  const raw = (high - low) / (count - 1) || 0.01;
  const magnitude = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * magnitude).find((s) => s >= raw);
  const digits = Math.max(2, Math.ceil(-Math.log10(10 ** step - 1)) + 2); // significant digits that keep the spacing even
  const ticks = [];
  for (let k = Math.ceil(low / step); k * step <= high + 1e-12; k++) ticks.push(Number((10 ** (k * step)).toPrecision(digits)));
  return ticks.filter((value) => value >= min && value <= max);
}

function yScale(colors, title) {
  return {
    type: view.log ? "logarithmic" : "linear",
    title: { display: Boolean(title), text: title, color: colors.text },
    afterBuildTicks(scale) {
      if (scale.type === "logarithmic") scale.ticks = logTicks(scale.min, scale.max).map((value) => ({ value }));
    },
    ticks: { color: colors.text, callback: (value) => price(value) },
    grid: { color: colors.grid },
  };
}

const shortDate = (iso) => new Date(`${iso}T00:00:00Z`).toLocaleDateString("en", { month: "short", day: "numeric", timeZone: "UTC" });

function xTicks(colors, canvas) {
  // Short dates ("Dec 22"; the tooltip keeps the ISO date), as many as the width holds.
  const width = canvas.parentElement.clientWidth || 600;
  return {
    color: colors.text, maxRotation: 0, autoSkipPadding: 16, maxTicksLimit: Math.max(3, Math.floor(width / 90)),
    callback(value) { return shortDate(this.getLabelForValue(value)); },
  };
}

function xRange(labels, historyLength) {
  const start = Math.max(0, historyLength - RANGE_DAYS[view.range]);
  return { min: labels[start], max: labels[labels.length - 1] };
}

const legendLabels = (colors) => ({ color: colors.text, usePointStyle: true, pointStyleWidth: 26, boxHeight: 8 });

function symbolConfig(canvas, result, level) {
  const colors = theme();
  const n = result.closes.length;
  const gap = (count) => new Array(count).fill(null);
  const labels = result.dates.concat(result.prediction_dates);
  // The forecast and its range start at the last close, so the dashed line joins the closes.
  const fromLastClose = (values) => gap(n - 1).concat([result.last_close], values);
  const datasets = [
    { label: "Close", data: result.closes.concat(gap(result.predictions.length)), borderColor: colors.close,
      backgroundColor: colors.close, pointRadius: 0, borderWidth: 1.5 },
    { label: `${result.window}-day moving average`, data: gap(result.window - 1).concat(result.trend, gap(result.predictions.length)),
      borderColor: colors.average, backgroundColor: colors.average, pointRadius: 0, borderWidth: 1.5 },
    // A line through points on the forecast dates (dashed: not prices yet).
    { label: "Forecast", data: fromLastClose(result.predictions), borderColor: colors.forecast, backgroundColor: colors.forecast,
      borderWidth: 2, borderDash: [6, 3], pointRadius: (ctx) => (ctx.dataIndex < n ? 0 : 3.5), pointHoverRadius: 5,
      clip: false }, // whole last point
  ];
  if (result.prediction_lower) {
    // The likely range, shaded between its two edges.
    const edge = { borderWidth: 0, pointRadius: 0, pointHoverRadius: 0, borderColor: colors.band, backgroundColor: colors.band };
    datasets.push(
      { label: "Likely range (low)", data: fromLastClose(result.prediction_lower), fill: false, ...edge },
      { label: "Likely range (high)", data: fromLastClose(result.prediction_upper), fill: "-1", ...edge },
    );
  }
  const rangeName = level ? `Likely range (${Math.round(level * 100)} %)` : "Likely range";
  return lineChart(labels, datasets, "index", {
    legend: {
      labels: {
        ...legendLabels(colors),
        // Lines as lines (the forecast dashed); one entry for the band, named after its level, while
        // the tooltip keeps "(low)" and "(high)".
        generateLabels: (chart) => Chart.defaults.plugins.legend.labels.generateLabels(chart)
          .filter((item) => item.text !== "Likely range (low)")
          .map((item) => (item.text === "Likely range (high)" ? { ...item, text: rangeName, pointStyle: "rect" }
            : { ...item, pointStyle: "line" })),
      },
    },
    tooltip: {
      filter: (item) => item.parsed.y !== null && (item.dataIndex >= n || item.datasetIndex < 2), // the close, once
      callbacks: { label: (item) => `${item.dataset.label}: ${price(item.parsed.y)}` },
    },
  }, {
    x: { ...xRange(labels, n), ticks: xTicks(colors, canvas), grid: { color: colors.grid } },
    y: yScale(colors),
  });
}

// What every chart here shares: a line chart drawn at once, filling its box, with room for the last forecast point.
function lineChart(labels, datasets, mode, plugins, scales) {
  return {
    type: "line",
    data: { labels, datasets },
    options: {
      animation: false,
      maintainAspectRatio: false,
      layout: { padding: { right: 6 } },
      interaction: { mode, intersect: false },
      plugins,
      scales,
    },
  };
}

export function drawSymbolChart(canvas, result, level) {
  canvas.setAttribute("aria-label", `${result.symbol}: daily closes, ${result.window}-day moving average and ` +
    `${result.predictions.length}-day forecast${result.prediction_lower ? " with its likely range" : ""}`);
  symbolCharts.set(canvas, { chart: new Chart(canvas, symbolConfig(canvas, result, level)), result, level });
}

function compareConfig(canvas, results) {
  const colors = theme();
  const history = [...new Set(results.flatMap((r) => r.dates))].sort();
  const start = history[Math.max(0, history.length - RANGE_DAYS[view.range])];
  const labels = [...new Set(history.concat(results.flatMap((r) => r.prediction_dates)))].sort().filter((d) => d >= start);
  const at = new Map(labels.map((date, i) => [date, i]));
  const datasets = results.map((result, k) => {
    // One line per symbol: its closes, then its forecast (dashed, with points), both over its first visible close.
    const first = result.dates.findIndex((date) => date >= start);
    const base = result.closes[first < 0 ? result.closes.length - 1 : first];
    const data = new Array(labels.length).fill(null);
    result.dates.forEach((date, i) => { if (at.has(date)) data[at.get(date)] = (result.closes[i] / base) * 100; });
    result.prediction_dates.forEach((date, i) => { if (at.has(date)) data[at.get(date)] = (result.predictions[i] / base) * 100; });
    const last = at.has(result.dates[result.dates.length - 1]) ? at.get(result.dates[result.dates.length - 1]) : -1;
    const color = colors.palette[k % colors.palette.length];
    return {
      label: result.symbol, data, borderColor: color, backgroundColor: color, borderWidth: 1.5, spanGaps: true, clip: false,
      pointRadius: data.map((value, i) => (i > last && value !== null ? 3 : 0)),
      segment: { borderDash: (ctx) => (ctx.p1DataIndex > last ? [6, 3] : undefined) },
      lastIndex: last,
    };
  });
  return lineChart(labels, datasets, "nearest", {
    // Past a dozen symbols a legend would hide the chart; the tooltip names each line.
    legend: { display: results.length <= 12, labels: { ...legendLabels(colors), pointStyle: "line" } },
    tooltip: {
      callbacks: {
        label: (item) => `${item.dataset.label}: ${price(item.parsed.y)}` +
          (item.dataIndex > item.dataset.lastIndex ? " (forecast)" : ""),
      },
    },
  }, {
    x: { ticks: xTicks(colors, canvas), grid: { color: colors.grid } },
    y: yScale(colors, "100 = the first close in view"),
  });
}

export function drawCompare(canvas, results) {
  // Normalising depends on the range, so the chart is rebuilt rather than updated.
  if (compare && compare.chart) compare.chart.destroy();
  compare = { canvas, results, chart: null };
  if (results.length < 2) return;
  canvas.setAttribute("aria-label", `The ${results.length} finished symbols' closes on one scale, each set to 100 at ` +
    "the start of the visible range, with their forecasts");
  compare.chart = new Chart(canvas, compareConfig(canvas, results));
}

function applyView() {
  for (const { chart, result } of symbolCharts.values()) {
    Object.assign(chart.options.scales.x, xRange(chart.data.labels, result.closes.length));
    chart.options.scales.y.type = view.log ? "logarithmic" : "linear";
    chart.update("none");
  }
  if (compare) drawCompare(compare.canvas, compare.results);
}

export function setRange(name, chosen = false) {
  view.range = name;
  view.chosen = view.chosen || chosen; // once someone picks a range, later analyses keep it
  document.querySelectorAll("[data-range]").forEach((button) =>
    button.setAttribute("aria-pressed", String(button.dataset.range === name)));
  applyView();
}

export function setLog(on) {
  view.log = on;
  document.getElementById("log-scale").setAttribute("aria-pressed", String(on));
  applyView();
}

export function clearCharts() {
  symbolCharts.forEach(({ chart }) => chart.destroy());
  symbolCharts.clear();
  if (compare && compare.chart) compare.chart.destroy();
  compare = null;
}

export function restyle() {
  // Light/dark changed: colours are baked into each chart, so draw them again.
  const drawn = [...symbolCharts.entries()];
  symbolCharts.forEach(({ chart }) => chart.destroy());
  symbolCharts.clear();
  drawn.forEach(([canvas, { result, level }]) => drawSymbolChart(canvas, result, level));
  if (compare) drawCompare(compare.canvas, compare.results);
}
