// Downloads of everything the page shows, as CSV (one row per date) and JSON (the API's results as they came),
// named after the symbols and the day: trends_AAPL-MSFT_2026-11-30.csv.

const NAMED_SYMBOLS = 4; // past this many, the name gives the first three and a count

const CSV_COLUMNS = [
  "symbol", "date", "kind", "close", "moving_average", "prediction", "likely_low", "likely_high",
  "horizon_day", "mape", "mae", "naive_mape", "naive_mae", "backtest_origins",
  "source", "adjusted", "method", "window", "horizon", "level", "coverage", "error",
];

function today() {
  const now = new Date();
  const two = (n) => String(n).padStart(2, "0");
  return `${now.getFullYear()}-${two(now.getMonth() + 1)}-${two(now.getDate())}`;
}

export function fileName(symbols, extension) {
  const safe = symbols.map((s) => s.replace(/[^A-Za-z0-9.=-]/g, "_"));
  const named = safe.length <= NAMED_SYMBOLS ? safe : [...safe.slice(0, NAMED_SYMBOLS - 1), `and-${safe.length - NAMED_SYMBOLS + 1}-more`];
  return `trends_${named.join("-")}_${today()}.${extension}`;
}

function csvField(value) {
  const text = value === null || value === undefined ? "" : String(value);
  return /[",\n\r]/.test(text) ? `"${text.replace(/"/g, '""')}"` : text;
}

function csvRows(result, params) {
  const level = result.interval ? result.interval.level : params.level;
  const common = {
    symbol: result.symbol, source: result.source, adjusted: result.adjusted, method: result.method ?? params.method,
    window: result.window ?? params.window, horizon: result.horizon ?? params.horizon, level,
    coverage: result.interval ? result.interval.coverage : null,
  };
  if (result.error) return [{ ...common, error: result.error }];
  const rows = result.dates.map((date, i) => ({
    ...common, date, kind: "close", close: result.closes[i],
    moving_average: i >= result.window - 1 ? result.trend[i - result.window + 1] : null,
  }));
  const record = result.backtest;
  result.prediction_dates.forEach((date, i) => rows.push({
    ...common, date, kind: "forecast", prediction: result.predictions[i],
    likely_low: result.prediction_lower ? result.prediction_lower[i] : null,
    likely_high: result.prediction_upper ? result.prediction_upper[i] : null,
    // The backtest is per horizon day, so it sits on the forecast row of that day.
    horizon_day: i + 1,
    ...(record && { mape: record.mape[i], mae: record.mae[i], naive_mape: record.naive_mape[i],
      naive_mae: record.naive_mae[i], backtest_origins: record.origins }),
  }));
  return rows;
}

export function toCsv(results, params) {
  const lines = [CSV_COLUMNS.join(",")];
  for (const result of results) {
    for (const row of csvRows(result, params)) lines.push(CSV_COLUMNS.map((column) => csvField(row[column])).join(","));
  }
  return lines.join("\n") + "\n";
}

export function toJson(results, params, id) {
  return JSON.stringify({ analysis: { id, ...params }, downloaded: today(), results }, null, 2);
}

export function download(name, type, text) {
  const link = document.createElement("a");
  link.href = URL.createObjectURL(new Blob([text], { type }));
  link.download = name;
  document.body.appendChild(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 1000);
}
