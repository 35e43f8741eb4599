// The dashboard's schedules panel: a graph's schedules with their next fire times, pause,
// resume and delete, and a form for a new one. Read when the graph is shown, after each
// action, and when a task a schedule submitted is created (the graph's event stream).

import { api } from "./api.js";
import { errorText, node, showMessage } from "./dom.js";
import { dueText, formatTime, fullTime } from "./format.js";

const $ = (selector) => document.querySelector(selector);

const panel = { base: null, serial: 0, timer: null };

const say = (text, kind) => showMessage($("#schedule-message"), text, kind);

/** "every 60 s", "cron 0 3 * * * (Europe/Paris)". */
function whenOf(schedule) {
  return schedule.every !== undefined && schedule.every !== null
    ? `every ${schedule.every} s`
    : `cron ${schedule.cron} (${schedule.timezone})`;
}

/** The next fire time, counted down by the page's clock (its [data-due] nodes). */
function nextOf(schedule) {
  if (schedule.paused) return node("span", { className: "badge s-pending", text: "paused" });
  const at = schedule.next_fire;
  const next = node("span", { className: "due", attrs: { "data-due": String(at), "data-due-format": "detail", title: fullTime(at) } });
  next.textContent = `${formatTime(at)} (${dueText(at)})`;
  return next;
}

function itemOf(schedule) {
  const toggle = schedule.paused ? "resume" : "pause";
  const buttons = [
    node("button", { text: schedule.paused ? "Resume" : "Pause", attrs: { type: "button", "data-schedule-action": toggle } }),
    node("button", { className: "danger", text: "Delete", attrs: { type: "button", "data-schedule-action": "delete" } }),
  ];
  const last = schedule.last_task_id ? `last task ${schedule.last_task_id} (${formatTime(schedule.last_fire)})` : "no task yet";
  return node("li", { className: "schedule", attrs: { "data-schedule": schedule.name, "data-paused": String(schedule.paused) } }, [
    node("div", { className: "schedule-head" }, [
      node("strong", { text: schedule.name }),
      node("span", { className: "type", text: schedule.type }),
      node("span", { className: "schedule-when", text: whenOf(schedule) }),
    ]),
    node("div", { className: "schedule-next" }, ["next: ", nextOf(schedule)]),
    node("div", { className: "schedule-last", text: `${last} · missed: ${schedule.missed} · from ${schedule.source}` }),
    node("div", { className: "actions" }, buttons),
  ]);
}

/** Reads and shows the graph's schedules (the newest answer wins). */
export async function loadSchedules() {
  if (!panel.base) return;
  const serial = ++panel.serial;
  try {
    const { schedules } = await api.schedules(panel.base);
    if (serial !== panel.serial) return;
    $("#schedule-list").replaceChildren(...schedules.map(itemOf));
    $("#schedules-empty").hidden = schedules.length > 0;
  } catch (error) {
    if (serial === panel.serial) say(errorText(error), "error");
  }
}

/** A task was created: one a schedule submitted moves its next fire time on. */
export function taskCreated(task) {
  if (!task.task_schedule) return;
  clearTimeout(panel.timer);
  panel.timer = setTimeout(loadSchedules, 200);
}

export function showSchedules(base) {
  panel.base = base;
  say("", "ok");
  $("#schedule-list").replaceChildren();
  return loadSchedules();
}

async function act(name, action) {
  try {
    if (action === "delete") {
      if (!window.confirm(`Delete schedule ${name}? The tasks it submitted stay.`)) return;
      await api.deleteSchedule(panel.base, name);
      say(`Schedule ${name} deleted.`, "ok");
    } else {
      await api.actSchedule(panel.base, name, action);
      say(`Schedule ${name} ${action}d.`, "ok");
    }
  } catch (error) {
    say(errorText(error), "error");
  }
  await loadSchedules();
}

async function add(event) {
  event.preventDefault();
  const body = { name: $("#schedule-name").value.trim(), type: $("#schedule-type").value };
  const when = $("#schedule-when").value.trim();
  if (/^\d+(\.\d+)?$/.test(when)) body.every = Number(when);
  else if (when) body.cron = when;
  const zone = $("#schedule-timezone").value.trim();
  if (body.cron && zone) body.timezone = zone;
  const text = $("#schedule-input").value.trim();
  try {
    if (text) body.input = JSON.parse(text);
  } catch (error) {
    say(`The input is not valid JSON: ${error.message}`, "error");
    return;
  }
  try {
    const made = await api.createSchedule(panel.base, body);
    say(`Schedule ${made.name} made: next fire ${formatTime(made.next_fire)}.`, "ok");
  } catch (error) {
    say(errorText(error), "error");
  }
  await loadSchedules();
}

/** Wires the panel once; `types` fill its job type list. */
export function startSchedules(types) {
  $("#schedule-type").replaceChildren(...types.map((t) => node("option", { text: t, attrs: { value: t } })));
  if (types.includes("echo")) $("#schedule-type").value = "echo";
  $("#schedule-timezone").value = Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";
  $("#schedule-list").addEventListener("click", (e) => {
    const button = e.target.closest("button[data-schedule-action]");
    const item = e.target.closest("li[data-schedule]");
    if (button && item) act(item.dataset.schedule, button.dataset.scheduleAction);
  });
  $("#schedule-form").addEventListener("submit", add);
}
