// Recent analyses, kept in this browser (localStorage) so people can come back to them. An entry
// keeps the analysis id: while the server still has its results it reopens as it was, later it runs again.

const KEY = "trends:recent";
const MAX_ENTRIES = 12;
const SHOWN_SYMBOLS = 6;

function load() {
  try {
    const list = JSON.parse(localStorage.getItem(KEY) || "[]");
    return Array.isArray(list) ? list.filter((entry) => entry && Array.isArray(entry.symbols) && entry.symbols.length) : [];
  } catch {
    return []; // storage off, or written by something else: history is a convenience, never an error
  }
}

function save(list) {
  try {
    localStorage.setItem(KEY, JSON.stringify(list.slice(0, MAX_ENTRIES)));
  } catch {
    // private mode or full storage: the page works without history
  }
}

const queryOf = (p) => JSON.stringify([p.symbols, p.window, p.horizon, p.method, p.level]);

export function remember(params, id) {
  // One entry per query (the newest id wins), newest first; reopening keeps the entry's times.
  const list = load();
  const old = list.find((entry) => entry.id === id);
  const kept = list.filter((entry) => entry.id !== id && queryOf(entry) !== queryOf(params));
  kept.unshift({ ...params, id, startedAt: old ? old.startedAt : Date.now(), endedAt: old ? old.endedAt : null });
  save(kept);
}

export function markEnded(id) {
  const list = load();
  const entry = list.find((e) => e.id === id);
  if (entry && !entry.endedAt) {
    entry.endedAt = Date.now();
    save(list);
  }
}

export function clearRecent() {
  try {
    localStorage.removeItem(KEY);
  } catch {
    // nothing stored, nothing to clear
  }
}

export function isFresh(entry, ttlSeconds) {
  // The server keeps results RESULT_TTL s after the last one; a margin covers clocks and the keeper's rhythm.
  const since = entry.endedAt || entry.startedAt;
  return Boolean(entry.id) && Date.now() - since < (ttlSeconds - 10) * 1000;
}

function ago(ms) {
  const minutes = Math.round((Date.now() - ms) / 60000);
  if (minutes < 1) return "just now";
  if (minutes < 60) return `${minutes} min ago`;
  if (minutes < 48 * 60) return `${Math.round(minutes / 60)} h ago`;
  return new Date(ms).toLocaleDateString();
}

function symbolsText(symbols) {
  if (symbols.length <= SHOWN_SYMBOLS) return symbols.join(", ");
  return `${symbols.slice(0, SHOWN_SYMBOLS - 1).join(", ")} and ${symbols.length - SHOWN_SYMBOLS + 1} more`;
}

export function showRecent(ttlSeconds, onPick) {
  // Each entry is one button: it says whether it reopens the stored results or runs the analysis again.
  const list = load();
  const items = list.map((entry) => {
    const fresh = isFresh(entry, ttlSeconds);
    const button = document.createElement("button");
    button.type = "button";
    button.className = "recent-item";
    button.dataset.action = fresh ? "reopen" : "rerun";
    const action = document.createElement("span");
    action.className = "recent-action";
    action.textContent = fresh ? "Reopen" : "Run again";
    const symbols = document.createElement("span");
    symbols.className = "recent-symbols";
    symbols.textContent = symbolsText(entry.symbols);
    const details = document.createElement("span");
    details.className = "hint";
    details.textContent = `${entry.window}-day average · ${entry.horizon}-day ${entry.method} forecast · ` +
      `${Math.round(entry.level * 100)} % range · ${ago(entry.startedAt)}`;
    button.append(action, " ", symbols, " ", details);
    button.addEventListener("click", () => onPick(entry, fresh));
    const li = document.createElement("li");
    li.appendChild(button);
    return li;
  });
  document.getElementById("recent-list").replaceChildren(...items);
  document.getElementById("recent").hidden = items.length === 0;
}
