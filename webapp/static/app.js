// The page: starts an analysis through the async API, follows it by polling, and draws each
// symbol as its job finishes. Text from the server goes in with textContent only, so a
// crafted symbol or error message cannot inject markup.
"use strict";

const POLL_MS = 500;
const MAX_RETRY_MS = 8000;
const ENDED = new Set(document.querySelector("main").dataset.endedStates.split(" ")); // from the server
const SOURCE_LABELS = {
  yahoo: "data: Yahoo Finance",
  csv: "data: CSV files",
  synthetic: "synthetic data — not real prices",
};

const $ = (id) => document.getElementById(id);
let current = null; // the analysis the page shows; anything older is ignored

function parseSymbols(text) {
  return text.split(/[\s,;]+/).map((s) => s.trim()).filter(Boolean);
}

function stop(analysis) {
  if (!analysis) return;
  analysis.stopped = true;
  clearTimeout(analysis.timer);
}

async function submit(event) {
  event.preventDefault();
  if (current) {
    stop(current);
    current.charts.forEach((chart) => chart.destroy());
    current = null;
  }
  $("form-error").textContent = "";
  const symbols = parseSymbols($("symbols").value);
  if (symbols.length === 0) {
    $("form-error").textContent = "Enter at least one symbol, for example AAPL, MSFT.";
    $("symbols").focus();
    return;
  }
  const body = {
    symbols, window: Number($("window").value), horizon: Number($("horizon").value), method: $("method").value,
  };
  $("submit").disabled = true;
  try {
    const response = await fetch("/api/analyses", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
    const answer = await response.json().catch(() => ({}));
    if (!response.ok) {
      $("form-error").textContent = answer.message || `The server refused the request (HTTP ${response.status}).`;
      return;
    }
    current = begin(answer.status_url);
    poll(current);
  } catch (error) {
    $("form-error").textContent = "The server could not be reached; check your connection and try again.";
  } finally {
    $("submit").disabled = false;
  }
}

function begin(url) {
  $("symbol-list").replaceChildren();
  $("notice").textContent = "";
  $("analysis").hidden = false;
  setDownloads(false);
  return { url, rows: new Map(), results: new Map(), order: [], charts: [], retryMs: POLL_MS, stopped: false, timer: null };
}

async function poll(analysis) {
  if (analysis.stopped) return;
  let body;
  try {
    const response = await fetch(analysis.url, { cache: "no-store" });
    if (response.status === 404) {
      $("notice").textContent = "This analysis has expired or is unknown to the server; submit again.";
      stop(analysis);
      return;
    }
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    body = await response.json();
  } catch (error) {
    if (analysis.stopped) return;
    const wait = analysis.retryMs;
    analysis.retryMs = Math.min(wait * 2, MAX_RETRY_MS);
    $("notice").textContent = `Connection to the server lost; retrying in ${Math.round(wait / 1000) || 1} s…`;
    analysis.timer = setTimeout(() => poll(analysis), wait);
    return;
  }
  if (analysis.stopped) return; // a newer submit replaced it while the answer was on its way
  analysis.retryMs = POLL_MS;
  $("notice").textContent = "";
  show(analysis, body);
  if (ENDED.has(body.state)) {
    stop(analysis);
    $("notice").textContent = endMessage(body);
    setDownloads(true);
  } else {
    analysis.timer = setTimeout(() => poll(analysis), POLL_MS);
  }
}

function endMessage(body) {
  const failed = body.symbols.filter((s) => s.state === "error").length;
  if (failed === 0) return body.total === 1 ? "The symbol was analysed." : `All ${body.total} symbols analysed.`;
  if (failed === body.total) return "No symbol could be analysed; each row says why.";
  return `${body.total - failed} of ${body.total} symbols analysed; ${failed} failed (see their rows).`;
}

function show(analysis, body) {
  $("progress").max = body.total;
  $("progress").value = body.done;
  $("progress-text").textContent = `${body.done} / ${body.total}`;
  for (const entry of body.symbols) {
    const row = rowFor(analysis, entry.symbol);
    const state = row.querySelector(".state");
    state.dataset.state = entry.state;
    state.textContent = entry.state;
    if (entry.result && !analysis.results.has(entry.symbol)) {
      analysis.results.set(entry.symbol, entry.result);
      render(analysis, row, entry.result);
    }
  }
}

function rowFor(analysis, symbol) {
  if (!analysis.rows.has(symbol)) {
    const row = $("symbol-template").content.firstElementChild.cloneNode(true);
    row.dataset.symbol = symbol;
    row.querySelector(".name").textContent = symbol;
    $("symbol-list").appendChild(row);
    analysis.rows.set(symbol, row);
    analysis.order.push(symbol);
  }
  return analysis.rows.get(symbol);
}

function render(analysis, row, result) {
  const badge = row.querySelector(".source");
  badge.textContent = SOURCE_LABELS[result.source] || (result.source ? `data: ${result.source}` : "");
  badge.classList.toggle("synthetic", result.source === "synthetic");
  if (result.error) {
    const message = row.querySelector(".message");
    message.textContent = result.error;
    message.classList.add("error");
    return;
  }
  drawChart(analysis, row, result);
  fillTable(row, result);
  describeTrackRecord(row, result);
}

function describeTrackRecord(row, result) {
  const line = row.querySelector(".track-record");
  const record = result.backtest;
  if (!record) {
    line.textContent = "Too little history to measure how good this forecast is.";
    return;
  }
  const day = result.horizon;
  const ours = record.mape[day - 1];
  const naive = record.naive_mape[day - 1];
  line.textContent = `Typical error at day ${day}: ${ours.toFixed(1)} % (naive, repeating the last close: ` +
    `${naive.toFixed(1)} %), over ${record.origins} past days of this symbol.`;
  if (ours > naive) {
    const flag = document.createElement("span");
    flag.className = "worse";
    flag.textContent = " This method did worse than the naive forecast here.";
    line.appendChild(flag);
  }
}

function drawChart(analysis, row, result) {
  const box = row.querySelector(".chart-box");
  const canvas = box.querySelector("canvas");
  const n = result.closes.length;
  const gap = (count) => new Array(count).fill(null);
  canvas.setAttribute("aria-label",
    `${result.symbol}: daily closes, ${result.window}-day moving average and ${result.horizon}-day forecast`);
  box.hidden = false;
  const chart = new Chart(canvas, {
    type: "line",
    data: {
      labels: result.dates.concat(result.prediction_dates),
      datasets: [
        { label: "Close", data: result.closes.concat(gap(result.horizon)), borderColor: "#0b5cad", pointRadius: 0, borderWidth: 1.5 },
        { label: `${result.window}-day moving average`, data: gap(result.window - 1).concat(result.trend, gap(result.horizon)),
          borderColor: "#b35c00", pointRadius: 0, borderWidth: 1.5 },
        { label: "Forecast", data: gap(n).concat(result.predictions), borderColor: "#6a1b9a", backgroundColor: "#6a1b9a",
          borderDash: [4, 3], pointRadius: 3 },
        ...band(result, gap(n)),
      ],
    },
    options: {
      animation: false,
      maintainAspectRatio: false,
      interaction: { mode: "index", intersect: false },
      plugins: { legend: { labels: { filter: (item) => item.text !== "Likely range (low)" } } },
      scales: { x: { ticks: { maxTicksLimit: 8 } } },
    },
  });
  analysis.charts.push(chart);
}

function band(result, before) {
  // The likely range from the backtest's past errors, drawn as a shaded band between two lines.
  if (!result.prediction_lower) return [];
  const edge = { borderWidth: 0, pointRadius: 0, backgroundColor: "rgba(106, 27, 154, 0.15)" };
  return [
    { label: "Likely range (low)", data: before.concat(result.prediction_lower), fill: false, ...edge },
    { label: "Likely range", data: before.concat(result.prediction_upper), fill: "-1", ...edge },
  ];
}

function fillTable(row, result) {
  const table = row.querySelector(".numbers");
  table.querySelector("caption").textContent = `${result.symbol}: last close and forecast`;
  const tbody = table.tBodies[0];
  const add = (label, value, range) => {
    const tr = tbody.insertRow();
    tr.insertCell().textContent = label;
    tr.insertCell().textContent = value.toFixed(2);
    tr.insertCell().textContent = range;
  };
  add(`${result.dates[result.dates.length - 1]} (last close)`, result.last_close, "");
  result.predictions.forEach((price, i) => {
    const range = result.prediction_lower
      ? `${result.prediction_lower[i].toFixed(2)} – ${result.prediction_upper[i].toFixed(2)}` : "";
    add(`${result.prediction_dates[i]} (forecast)`, price, range);
  });
  table.hidden = false;
}

function setDownloads(enabled) {
  $("download-csv").disabled = !enabled;
  $("download-json").disabled = !enabled;
}

function orderedResults() {
  return current ? current.order.map((symbol) => current.results.get(symbol)).filter(Boolean) : [];
}

function csvField(value) {
  const text = value === null || value === undefined ? "" : String(value);
  return /[",\n]/.test(text) ? `"${text.replace(/"/g, '""')}"` : text;
}

function toCsv(results) {
  const lines = [["symbol", "date", "close", "moving_average", "forecast", "source", "error"]];
  for (const r of results) {
    if (r.error) { lines.push([r.symbol, "", "", "", "", r.source, r.error]); continue; }
    r.dates.forEach((date, i) => {
      const trend = i >= r.window - 1 ? r.trend[i - r.window + 1] : "";
      lines.push([r.symbol, date, r.closes[i], trend, "", r.source, ""]);
    });
    r.prediction_dates.forEach((date, i) => lines.push([r.symbol, date, "", "", r.predictions[i], r.source, ""]));
  }
  return lines.map((line) => line.map(csvField).join(",")).join("\n") + "\n";
}

function download(name, type, text) {
  const link = document.createElement("a");
  link.href = URL.createObjectURL(new Blob([text], { type }));
  link.download = name;
  document.body.appendChild(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 1000);
}

$("analysis-form").addEventListener("submit", submit);
$("download-csv").addEventListener("click", () => download("trends.csv", "text/csv", toCsv(orderedResults())));
$("download-json").addEventListener("click", () =>
  download("trends.json", "application/json", JSON.stringify({ results: orderedResults() }, null, 2)));
window.addEventListener("pagehide", () => stop(current));
