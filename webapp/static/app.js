// The page: starts an analysis through the async API, follows it by polling (each poll carries only
// the results new since the last one), and draws each symbol as its job finishes. The query and the
// analysis id live in the URL, so reload, back/forward and a pasted link show the same analysis.
import { clearCharts, defaultRange, drawCompare, restyle, setLog, setRange, view } from "./charts.js";
import { download, fileName, toCsv, toJson } from "./downloads.js";
import { clearRecent, markEnded, remember, showRecent } from "./recent.js";
import { renderResult } from "./rows.js";

const POLL_MS = 500;
const MAX_RETRY_MS = 8000;
const ID_PATTERN = /^[0-9a-f]{32}$/;
const main = document.querySelector("main");
const ENDED = new Set(main.dataset.endedStates.split(" ")); // from the server
const RESULT_TTL = Number(main.dataset.resultTtl); // seconds the server keeps an answered analysis
const $ = (id) => document.getElementById(id);
const METHODS = Object.fromEntries([...$("method").options].map((o) => [o.value, o.dataset.meaning]));
const FORM = $("analysis-form").dataset; // the limits the API enforces, as the server rendered them
const TICKER = new RegExp(FORM.tickerPattern);
// What each request field is called on the form, for the rare refusal the form's own checks did not foresee.
const FIELD_NAMES = { window: "Moving-average window", horizon: "Forecast horizon", method: "Forecast method",
  level: "Likely range" };
let current = null; // the analysis the page shows; anything older is ignored

function parseSymbols(text) {
  // Sent as typed: the server checks, upper-cases and de-duplicates them, and its answer then fills
  // the form, the URL and the history (adopt).
  return [...new Set(text.split(/[\s,;]+/).map((s) => s.trim()).filter(Boolean))];
}

// --- The query: form ⇄ params ⇄ URL ------------------------------------------------------------

function formParams() {
  return {
    symbols: parseSymbols($("symbols").value), window: Number($("window").value),
    horizon: Number($("horizon").value), method: $("method").value, level: Number($("level").value),
  };
}

function defaults() {
  // The values the server put in the form, for parameters a URL leaves out.
  const selected = (select) => ([...select.options].find((o) => o.defaultSelected) || select.options[0]).value;
  return { symbols: [], window: Number($("window").defaultValue), horizon: Number($("horizon").defaultValue),
    method: selected($("method")), level: Number(selected($("level"))) };
}

function fillForm(params) {
  $("symbols").value = params.symbols.join(", ");
  $("window").value = params.window;
  $("horizon").value = params.horizon;
  const methods = [...$("method").options].map((o) => o.value);
  $("method").value = methods.includes(params.method) ? params.method : defaults().method; // a link's unknown one: ours
  describeMethod();
  const level = $("level");
  if (![...level.options].some((o) => Number(o.value) === params.level) &&
      params.level >= Number(level.dataset.min) && params.level <= Number(level.dataset.max)) {
    level.add(new Option(`${Math.round(params.level * 100)} %`, String(params.level))); // a level a link asked for
  }
  level.value = [...level.options].find((o) => Number(o.value) === params.level)?.value ?? level.value;
}

function readUrl() {
  const query = new URLSearchParams(location.search);
  const base = defaults();
  const number = (name) => (query.has(name) && query.get(name) !== "" ? Number(query.get(name)) : base[name]);
  const id = query.get("id");
  return {
    params: { symbols: parseSymbols(query.get("symbols") || ""), window: number("window"), horizon: number("horizon"),
      method: query.get("method") || base.method, level: number("level") },
    id: id && ID_PATTERN.test(id) ? id : null,
  };
}

function writeUrl(params, id, how) {
  // Commas left readable: ?symbols=AAPL,MSFT&window=20&horizon=5&method=trend&level=0.8&id=…
  const parts = [`symbols=${params.symbols.map(encodeURIComponent).join(",")}`, `window=${params.window}`,
    `horizon=${params.horizon}`, `method=${encodeURIComponent(params.method)}`, `level=${params.level}`];
  if (id) parts.push(`id=${id}`);
  const url = `${location.pathname}?${parts.join("&")}`;
  const shown = params.symbols.length > 3 ? `${params.symbols.slice(0, 3).join(", ")} +${params.symbols.length - 3}`
    : params.symbols.join(", ");
  document.title = `${shown} — Stock trends and forecasts`;
  if (url === location.pathname + location.search) return;
  if (how === "push") history.pushState(null, "", url);
  else history.replaceState(null, "", url);
}

function restore() {
  // Show what the URL says: an analysis by id (its results, no new work), else run its query, else nothing.
  const { params, id } = readUrl();
  fillForm(params);
  if (current && id && current.id === id) {
    if (current.stopped && !current.ended) resume(current); // back from the page cache mid-analysis
    return;
  }
  if (id) open(params, id, null);
  else if (params.symbols.length) run(params, "replace");
  else {
    leave();
    $("analysis").hidden = true;
    document.title = "Stock trends and forecasts";
  }
}

function describeMethod() {
  const option = $("method").selectedOptions[0];
  $("method-meaning").textContent = option ? `${option.value}: ${option.dataset.meaning}.` : "";
}

// --- Checking the form in its own words ---------------------------------------------------------

function wholeNumberProblem(id, name, value) {
  // The form's own limits (min and max come from the server): a message in the form's words, or "".
  const input = $(id);
  const [min, max] = [Number(input.min), Number(input.max)];
  if (Number.isInteger(value) && value >= min && value <= max) return "";
  const typed = input.value.trim() === "" ? "nothing" : `"${input.value.trim()}"`;
  return `${name} is a whole number of trading days from ${min} to ${max}; you entered ${typed}.`;
}

function formProblem(params) {
  // [field id, message] for the first thing the API would refuse, or null: nothing is sent until it is right.
  const max = Number(FORM.maxSymbols);
  if (params.symbols.length === 0) return ["symbols", "Enter at least one symbol, for example AAPL, MSFT."];
  if (params.symbols.length > max) {
    return ["symbols", `Enter at most ${max} symbols at once; you entered ${params.symbols.length}.`];
  }
  const bad = params.symbols.find((symbol) => !TICKER.test(symbol));
  if (bad !== undefined) {
    const shown = bad.length > 20 ? `${bad.slice(0, 17)}...` : bad;
    return ["symbols", `"${shown}" is not a ticker: ${FORM.tickerRule}, for example BRK-B or ^GSPC.`];
  }
  for (const [id, name] of [["window", "The moving-average window"], ["horizon", "The forecast horizon"]]) {
    const problem = wholeNumberProblem(id, name, params[id]);
    if (problem) return [id, problem];
  }
  return null;
}

function inFormWords(message) {
  // The API names fields as JSON does ("window": …, "symbols"[2] …); the form names them as its labels do.
  return message
    .replace(/"symbols"\[(\d+)\]/g, (_, i) => `Symbol ${Number(i) + 1}`)
    .replace(/"symbols"/g, "Symbols")
    .replace(/"(\w+)"/g, (whole, field) => (Object.hasOwn(FIELD_NAMES, field) ? FIELD_NAMES[field] : whole));
}

function showFormError(id, message) {
  $("form-error").textContent = message;
  if (!id) return;
  $(id).setAttribute("aria-invalid", "true");
  $(id).focus();
}

// --- Starting and following analyses ------------------------------------------------------------

async function run(params, how) {
  $("form-error").textContent = "";
  document.querySelectorAll("#analysis-form [aria-invalid]").forEach((field) => field.removeAttribute("aria-invalid"));
  const problem = formProblem(params);
  if (problem) {
    showFormError(...problem);
    return;
  }
  $("submit").disabled = true;
  try {
    const response = await fetch("/api/analyses", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(params),
    });
    const answer = await response.json().catch(() => ({}));
    if (!response.ok) {
      showFormError(null, answer.message ? inFormWords(answer.message) : `The server refused the request (HTTP ${response.status}).`);
      return;
    }
    follow(params, answer.id, answer.status_url, how, null);
  } catch (error) {
    $("form-error").textContent = "The server could not be reached; check your connection and try again.";
  } finally {
    $("submit").disabled = false;
  }
}

function open(params, id, how) {
  // An analysis the server may still have: read it; if it has expired, run the same query again.
  follow(params, id, `/api/analyses/${id}`, how, () => {
    $("notice").textContent = "That analysis is no longer on the server (expired, or made with another price source); running it again…";
    run(params, "replace");
  });
}

function leave() {
  if (!current) return;
  stop(current);
  clearCharts();
  current = null;
}

function follow(params, id, url, how, onGone) {
  leave();
  if (how) writeUrl(params, id, how);
  remember(params, id);
  showRecent(RESULT_TTL, pick);
  $("symbol-list").replaceChildren();
  $("notice").textContent = "";
  $("compare").hidden = true;
  $("advice").hidden = true;
  $("analysis").hidden = false;
  setChartControls(false);
  setDownloads(false);
  if (!view.chosen) setRange(defaultRange(params.horizon));
  current = { id, params, url, onGone, cursor: "", adopted: false, ended: false, rows: new Map(), results: new Map(), order: [],
    retryMs: POLL_MS, stopped: false, timer: null };
  poll(current);
}

function resume(analysis) {
  analysis.stopped = false;
  poll(analysis);
}

function stop(analysis) {
  analysis.stopped = true;
  clearTimeout(analysis.timer);
}

async function poll(analysis) {
  if (analysis.stopped) return;
  let body;
  try {
    // `since`: the server leaves out the results it gave before (the page keeps them).
    const url = analysis.cursor ? `${analysis.url}?since=${encodeURIComponent(analysis.cursor)}` : analysis.url;
    const response = await fetch(url, { cache: "no-store" });
    if (analysis.stopped) return;
    if (response.status === 404) {
      stop(analysis);
      if (analysis.onGone && analysis.results.size === 0) analysis.onGone();
      else $("notice").textContent = "This analysis has expired or is unknown to the server; submit again.";
      return;
    }
    if (response.status === 400 && analysis.cursor) analysis.cursor = ""; // a cursor it refuses: ask for everything
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
  if (analysis.stopped) return; // a newer analysis replaced it while the answer was on its way
  analysis.retryMs = POLL_MS;
  analysis.cursor = body.cursor || "";
  $("notice").textContent = "";
  show(analysis, body);
  if (ENDED.has(body.state)) {
    stop(analysis);
    analysis.ended = true;
    $("notice").textContent = endMessage(body);
    setDownloads(orderedResults(analysis).some((result) => !result.error)); // nothing to save when all failed
    markEnded(analysis.id);
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

function adopt(analysis, body) {
  // The server's record is what ran: the form, the URL and the history follow it.
  analysis.adopted = true;
  const params = { symbols: body.symbols.map((s) => s.symbol), window: body.window, horizon: body.horizon,
    method: body.method, level: body.level ?? analysis.params.level };
  analysis.params = params;
  fillForm(params);
  writeUrl(params, analysis.id, "replace");
  remember(params, analysis.id);
  showRecent(RESULT_TTL, pick);
}

function show(analysis, body) {
  if (!analysis.adopted) adopt(analysis, body);
  $("progress").max = body.total;
  $("progress").value = body.done;
  $("progress-text").textContent = `${body.done} / ${body.total}`;
  let added = false;
  for (const entry of body.symbols) {
    const row = rowFor(analysis, entry.symbol);
    const state = row.querySelector(".state");
    state.dataset.state = entry.state;
    state.textContent = entry.state;
    if (entry.result && !analysis.results.has(entry.symbol)) {
      analysis.results.set(entry.symbol, entry.result);
      renderResult(row, entry.result, { level: analysis.params.level, methods: METHODS, onAnchored: switchToAnchored });
      added = true;
    }
  }
  if (added) showCompare(analysis);
}

function showAdvice(analysis) {
  // A source nobody could reach fails every row alike: say once what to check, and the way to try without a network.
  const unreachable = orderedResults(analysis).some((result) => result.reason === "source_unavailable");
  $("advice").hidden = !unreachable;
}

function showCompare(analysis) {
  const finished = orderedResults(analysis).filter((r) => !r.error);
  setChartControls(finished.length > 0);
  showAdvice(analysis);
  $("compare").hidden = finished.length < 2;
  drawCompare($("compare").querySelector("canvas"), finished);
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

function switchToAnchored() {
  const params = { ...current.params, method: "anchored" };
  fillForm(params);
  run(params, "push");
}

function pick(entry, fresh) {
  // A history entry: reopen its results while the server keeps them, else run its query again.
  const params = { symbols: entry.symbols, window: entry.window, horizon: entry.horizon, method: entry.method,
    level: entry.level };
  fillForm(params);
  if (fresh) open(params, entry.id, "push");
  else run(params, "push");
  $("analysis").scrollIntoView({ block: "start" });
}

// --- Controls that need a result -----------------------------------------------------------------

function setChartControls(enabled) {
  // The range buttons and the log scale act on charts: only a symbol that succeeded has one.
  document.querySelectorAll("[data-range], #log-scale").forEach((button) => { button.disabled = !enabled; });
}

function setDownloads(enabled) {
  $("download-csv").disabled = !enabled;
  $("download-json").disabled = !enabled;
}

function orderedResults(analysis) {
  return analysis ? analysis.order.map((symbol) => analysis.results.get(symbol)).filter(Boolean) : [];
}

$("analysis-form").addEventListener("submit", (event) => {
  event.preventDefault();
  run(formParams(), "push");
});
$("download-csv").addEventListener("click", () =>
  download(fileName(current.params.symbols, "csv"), "text/csv", toCsv(orderedResults(current), current.params)));
$("download-json").addEventListener("click", () =>
  download(fileName(current.params.symbols, "json"), "application/json",
    toJson(orderedResults(current), current.params, current.id)));
document.querySelectorAll("[data-range]").forEach((button) =>
  button.addEventListener("click", () => setRange(button.dataset.range, true)));
$("log-scale").addEventListener("click", () => setLog(!view.log));
$("method").addEventListener("change", describeMethod);
$("clear-recent").addEventListener("click", () => {
  clearRecent();
  showRecent(RESULT_TTL, pick);
  $("symbols").focus(); // the list and its button are gone: keep the keyboard somewhere useful
});
matchMedia("(prefers-color-scheme: dark)").addEventListener("change", restyle);
window.addEventListener("popstate", restore);
window.addEventListener("pagehide", () => current && stop(current));
window.addEventListener("pageshow", (event) => {
  if (event.persisted) restore(); // back from the page cache: polling was stopped on the way out
});
showRecent(RESULT_TTL, pick);
restore();
