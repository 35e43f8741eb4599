// How values are shown: times, progress, JSON text.

const pad = (n, width = 2) => String(n).padStart(width, "0");

function day(date) {
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}`;
}

/** Epoch milliseconds as local time: `14:03:07` today, `2026-11-20 14:03:07` before. */
export function formatTime(ms, { millis = false } = {}) {
  if (!ms) return "";
  const date = new Date(ms);
  let time = `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}`;
  if (millis) time += `.${pad(date.getMilliseconds(), 3)}`;
  return day(date) === day(new Date()) ? time : `${day(date)} ${time}`;
}

/** The full local time, for a tooltip. */
export function fullTime(ms) {
  return ms ? `${day(new Date(ms))} ${formatTime(ms, { millis: true }).slice(-12)}` : "";
}

// A task's input never changes: the scale of its progress is read from it once, from the
// first state of the task that carries its input (an event may leave the input out).
const scales = new Map();

function scaleOf(task) {
  if (scales.has(task.id)) return scales.get(task.id);
  if (task.task_input === undefined) return null;
  let scale = null;
  try {
    const input = JSON.parse(task.task_input ?? "null");
    for (const key of ["total", "steps"]) {
      const value = input?.[key];
      if (Number.isInteger(value) && value > 0) {
        scale = value;
        break;
      }
    }
  } catch {
    // not JSON: no known scale
  }
  scales.set(task.id, scale);
  return scale;
}

/** Progress is on a job-defined scale. Its end is the total the job declared
 *  (`task_progress_total`), else the input's `total` or `steps` when it has one; otherwise
 *  the value is read as a percentage. */
export function progressOf(task) {
  const value = task.task_progress ?? 0;
  const declared = task.task_progress_total;
  const scale = Number.isInteger(declared) && declared > 0 ? declared : scaleOf(task);
  const max = scale ?? 100;
  let fraction = Math.min(Math.max(value / max, 0), 1);
  if (task.task_status === "success") fraction = 1;
  const label = scale === null ? (value ? String(value) : "") : `${value}/${scale}`;
  return { value, max, fraction, label };
}

const UNITS = [
  ["d", 86_400_000],
  ["h", 3_600_000],
  ["min", 60_000],
  ["s", 1000],
];

/** A span of time as a person says it: `4 min`, `2 h 5 min`, `35 s`, `3 d 2 h`. */
export function span(ms) {
  const parts = [];
  let left = Math.max(0, Math.round(ms / 1000) * 1000);
  for (const [unit, size] of UNITS) {
    if (left >= size || (unit === "s" && parts.length === 0)) {
      parts.push(`${Math.floor(left / size)} ${unit}`);
      left %= size;
    }
    if (parts.length === 2 || (parts.length === 1 && size >= 60_000 && left < 60_000)) break;
  }
  return parts.join(" ");
}

/** When a waiting task becomes due, from now: `due in 4 min`, or `due now` once it is. */
export function dueText(ms, now = Date.now()) {
  return ms - now >= 1000 ? `due in ${span(ms - now)}` : "due now";
}

/** JSON text pretty-printed; any other text (a failed task's error) as it is. */
export function prettyJson(text) {
  if (text === undefined || text === null) return "";
  try {
    return JSON.stringify(JSON.parse(text), null, 2);
  } catch {
    return text;
  }
}
