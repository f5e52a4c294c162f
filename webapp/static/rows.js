// One row per symbol: its badges, chart, numbers, track record and what they mean. Text from the
// server goes in with textContent only, so a crafted symbol or error message cannot inject markup.
import { drawSymbolChart, price } from "./charts.js";

const SOURCE_LABELS = {
  yahoo: "data: Yahoo Finance",
  csv: "data: CSV files",
  synthetic: "synthetic data — not real prices",
};
// A trend forecast this far from the last close gets a note: the line is fitted through the whole year.
const FAR_SHARE = 0.03;
const FAR_TYPICAL_ERRORS = 2;
// Typical errors this close to the naive forecast's (relative) read as "about as good", not better or worse.
const SAME_AS_NAIVE = 0.05;
const NBSP = "\u00a0";

const percent = (value) => (value === null || value === undefined ? "n/a" : `${Number(value).toFixed(1)} %`);

export function levelOf(result, requested) {
  return result.interval && result.interval.level ? result.interval.level : requested;
}

function inWords(level) {
  // 0.8 → "8 in 10", 0.95 → "19 in 20"
  const pct = Math.round(level * 100);
  if (pct % 10 === 0) return `${pct / 10} in 10`;
  const gcd = (a, b) => (b ? gcd(b, a % b) : a);
  const d = gcd(pct, 100);
  return `${pct / d} in ${100 / d}`;
}

export function renderResult(row, result, context) {
  // context: { level (the analysis'), methods (name → meaning), onAnchored() }
  showBadges(row, result);
  if (result.error) {
    const message = row.querySelector(".message");
    message.textContent = result.error;
    message.classList.add("error");
    return;
  }
  const level = levelOf(result, context.level);
  noteFarStart(row, result, context.onAnchored);
  const box = row.querySelector(".chart-box");
  box.hidden = false;
  drawSymbolChart(box.querySelector("canvas"), result, result.prediction_lower ? level : null);
  fillTable(row, result, level);
  describeCoverage(row, result);
  describeTrackRecord(row, result);
  explain(row, result, level, context.methods);
}

function showBadges(row, result) {
  const badge = row.querySelector(".source");
  badge.textContent = SOURCE_LABELS[result.source] || (result.source ? `data: ${result.source}` : "");
  badge.classList.toggle("synthetic", result.source === "synthetic");
  badge.hidden = !badge.textContent;
  const adjusted = row.querySelector(".adjusted");
  if (typeof result.adjusted !== "boolean") return; // results from before the field: say nothing
  adjusted.hidden = false;
  adjusted.textContent = result.adjusted ? "adjusted closes" : "unadjusted closes";
  adjusted.title = result.adjusted ? "Closes adjusted for splits and dividends"
    : "Closes as the source gives them, not adjusted for dividends";
}

function fillTable(row, result, level) {
  // Three short columns that fit a phone: the last close's row says what it is where a forecast has its range.
  const table = row.querySelector(".numbers");
  table.querySelector("caption").textContent = `${result.symbol}: the last close, then the ${result.method} forecast`;
  if (result.prediction_lower) row.querySelector(".range-head").textContent = `${Math.round(level * 100)}${NBSP}% likely range`;
  const tbody = table.tBodies[0];
  const add = (date, value) => {
    const tr = tbody.insertRow();
    tr.insertCell().textContent = date;
    tr.insertCell().textContent = price(value);
    return tr.insertCell();
  };
  const known = add(result.dates[result.dates.length - 1], result.last_close);
  known.textContent = "last close";
  known.className = "known";
  result.predictions.forEach((value, i) => {
    add(result.prediction_dates[i], value).textContent = result.prediction_lower
      ? `${price(result.prediction_lower[i])}${NBSP}–${NBSP}${price(result.prediction_upper[i])}` : "";
  });
  table.hidden = false;
}

function describeCoverage(row, result) {
  // Said only when the server measured it (results carry "interval" from version 0.8.0 on), in the measured words.
  const interval = result.interval;
  if (!result.prediction_lower || !interval || !Number.isFinite(interval.level) || !Number.isFinite(interval.coverage)) return;
  const line = row.querySelector(".coverage");
  line.textContent = `${Math.round(interval.level * 100)} % range: in this symbol's past year, ` +
    `${inWords(interval.coverage)} outcomes fell in ranges built this way (${Math.round(interval.coverage * 100)} %).`;
  line.hidden = false;
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
  line.textContent = `Typical error at day ${day}: ${percent(ours)} (naive, repeating the last close: ` +
    `${percent(naive)}), over ${record.origins} past days of this symbol.`;
  if (Math.abs(ours - naive) <= SAME_AS_NAIVE * naive) {
    line.append(" About as good as the naive forecast here.");
  } else if (ours > naive) {
    const flag = document.createElement("span");
    flag.className = "worse";
    flag.textContent = " This method did worse than the naive forecast here.";
    line.appendChild(flag);
  }
}

function explain(row, result, level, methods) {
  const record = result.backtest;
  const low = Math.round(((1 - level) / 2) * 100);
  const terms = [
    [`The ${result.method} method`, `${methods[result.method] || result.method}: a straight line fitted by linear ` +
      `regression through the ${result.closes.length} daily closes (trading day → close).`],
    ["The naive baseline", `Every future day = the last close (${price(result.last_close)}). A method is worth ` +
      "using only where it beats this."],
    ["Typical error", record
      ? `The mean absolute percentage error: at each of ${record.origins} past days with enough closes behind it, the ` +
        `method saw only the closes up to that day and was compared with what followed (day 1: ${percent(record.mape[0])}, ` +
        `${price(record.mae[0])} in price).`
      : "Measured on the symbol's own past; this history is too short for it."],
  ];
  if (result.prediction_lower) {
    terms.push([`Likely range (${Math.round(level * 100)} %)`, "Where the price is likely to be, the same for " +
      "every method: it starts from the last close and follows the fitted line's slope, spread by how far prices " +
      `strayed from such paths in this symbol's year (scaled by recent volatility), between their ${low}th and ` +
      `${100 - low}th percentile. On 24 real price series such ranges held their level. The trend line can lie ` +
      "outside it: its distance from the last close says nothing of where the price goes. Not a guarantee."]);
  }
  const list = row.querySelector(".explain dl");
  for (const [term, meaning] of terms) {
    const dt = document.createElement("dt");
    dt.textContent = term;
    const dd = document.createElement("dd");
    dd.textContent = meaning;
    list.append(dt, dd);
  }
  row.querySelector(".explain").hidden = false;
}

function daysOutsideRange(result) {
  if (!result.prediction_lower) return 0;
  return result.predictions.filter((value, i) => value < result.prediction_lower[i] || value > result.prediction_upper[i]).length;
}

function noteFarStart(row, result, onAnchored) {
  // The anchored forecast starts at the last close and is its range's own path: only the others need the note.
  if (result.method === "anchored" || !result.predictions.length) return;
  const gap = result.predictions[0] - result.last_close;
  const share = Math.abs(gap) / result.last_close;
  const typical = result.backtest ? result.backtest.mae[0] : null;
  const pastErrors = Number.isFinite(typical) && typical > 0 && Math.abs(gap) > FAR_TYPICAL_ERRORS * typical;
  const outside = daysOutsideRange(result);
  if (share <= FAR_SHARE && !pastErrors && !outside) return;
  const note = row.querySelector(".far-note");
  note.querySelector("p").textContent = `The forecast starts ${(share * 100).toFixed(1)} % ${gap > 0 ? "above" : "below"} ` +
    `the last close (${price(result.predictions[0])} against ${price(result.last_close)})` +
    (pastErrors ? `, more than ${FAR_TYPICAL_ERRORS} times its typical day-1 error (${price(typical)})` : "") +
    (outside ? `, and lies outside the likely range on ${outside} of its ${result.predictions.length} days` : "") +
    `: the ${result.method} method continues the line fitted through the whole year, which can sit far from ` +
    "today's price. The anchored method keeps the line's slope but starts from the last close.";
  note.querySelector("button").addEventListener("click", onAnchored);
  note.hidden = false;
}
