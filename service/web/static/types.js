// The dashboard's job types panel: each registered type, paused (since when) or running,
// with Pause and Resume. A pause holds for the whole service (every graph, every replica):
// nothing new of the type starts; its running jobs finish. Read when the page starts,
// after each action, and every few seconds (a pause made elsewhere shows up).

import { api } from "./api.js";
import { errorText, node, showMessage } from "./dom.js";
import { formatTime, fullTime } from "./format.js";

const $ = (selector) => document.querySelector(selector);
const REFRESH_MS = 5000;
const panel = { serial: 0 };

const say = (text, kind) => showMessage($("#type-message"), text, kind);

function itemOf(name, since, limits) {
  const paused = since !== undefined;
  const state = paused
    ? node("span", { className: "badge s-pending", text: `paused since ${formatTime(since)}`, attrs: { title: fullTime(since) } })
    : node("span", { className: "type-runs", text: "runs" });
  const button = node("button", {
    text: paused ? "Resume" : "Pause",
    attrs: { type: "button", "data-type-action": paused ? "resume" : "pause" },
  });
  const limit = [limits.concurrency?.[name] && `${limits.concurrency[name]} at once`, limits.rate_limits?.[name]]
    .filter(Boolean)
    .join(", ");
  return node("li", { className: "job-type", attrs: { "data-type": name, "data-paused": String(paused) } }, [
    node("strong", { text: name }),
    state,
    node("span", { className: "type-limits", text: limit }),
    button,
  ]);
}

/** Reads and shows the types (the newest answer wins). */
export async function loadTypes() {
  const serial = ++panel.serial;
  try {
    const { types, paused, ...limits } = await api.types();
    if (serial !== panel.serial) return;
    const names = [...new Set([...types, ...Object.keys(paused ?? {})])].sort();
    $("#type-list").replaceChildren(...names.map((name) => itemOf(name, paused?.[name], limits)));
  } catch (error) {
    if (serial === panel.serial) say(errorText(error), "error");
  }
}

async function act(name, action) {
  if (action === "pause" && !window.confirm(`Pause job type ${name}? Nothing new of it starts, in any graph, until it is resumed; its running jobs finish.`)) return;
  try {
    await api.actType(name, action);
    say(action === "pause" ? `Job type ${name} paused.` : `Job type ${name} runs again.`, "ok");
  } catch (error) {
    say(errorText(error), "error");
  }
  await loadTypes();
}

/** Wires the panel once. */
export function startTypes() {
  $("#type-list").addEventListener("click", (e) => {
    const button = e.target.closest("button[data-type-action]");
    const item = e.target.closest("li[data-type]");
    if (button && item) act(item.dataset.type, button.dataset.typeAction);
  });
  setInterval(loadTypes, REFRESH_MS);
  return loadTypes();
}
