// Sends the form to POST /get_trends and shows one row per symbol. Text goes in with
// textContent only, so a crafted symbol or error message cannot inject markup.
"use strict";

const form = document.getElementById("trends-form");
const statusLine = document.getElementById("status");
const table = document.getElementById("results");

function cell(row, text, className) {
  const td = row.insertCell();
  td.textContent = text;
  if (className) td.className = className;
  return td;
}

function sourceBadge(row, source) {
  const span = document.createElement("span");
  span.className = "badge " + (source || "");
  span.textContent = source === "synthetic" ? "synthetic (not real prices)" : (source || "");
  row.insertCell().appendChild(span);
}

function showResults(results) {
  const body = table.tBodies[0];
  body.replaceChildren();
  for (const result of results) {
    const row = body.insertRow();
    cell(row, result.symbol);
    sourceBadge(row, result.source);
    if (result.error) {
      cell(row, result.error, "error").colSpan = 2;
      continue;
    }
    cell(row, result.last_close.toFixed(2));
    cell(row, result.predictions.map((p, i) => `${result.prediction_dates[i]}: ${p.toFixed(2)}`).join("\n"));
  }
  table.hidden = results.length === 0;
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  const symbols = document.getElementById("symbols").value.split(/[\s,]+/).filter(Boolean);
  const body = {
    symbols,
    window: Number(document.getElementById("window").value),
    horizon: Number(document.getElementById("horizon").value),
  };
  statusLine.textContent = `Analysing ${symbols.length} symbol(s)…`;
  try {
    const response = await fetch("/get_trends", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
    const answer = await response.json();
    statusLine.textContent = answer.message;
    showResults(answer.results || []);
  } catch (error) {
    statusLine.textContent = "The server could not be reached; try again.";
  }
});
