// The dashboard: a graph's tasks, kept current by its event stream (no polling), a task's
// detail and timeline, its actions, and a form to submit jobs.

import { api, graphBase, url } from "./api.js";
import { errorText, node as el, showMessage } from "./dom.js";
import { dueText, formatTime, fullTime, prettyJson, progressOf, span } from "./format.js";
import { showSchedules, startSchedules, taskCreated } from "./schedules.js";
import { startTypes } from "./types.js";

const $ = (selector) => document.querySelector(selector);

/** Example inputs for the built-in job types, so the form is ready to submit. */
const EXAMPLES = {
  sleep: { steps: 10, interval: 1.0 },
  echo: { hello: "world" },
  fail: { message: "something went wrong" },
  gremlin: { gremlin: "g.V().count()" },
};
/** The counters as a person reads them: each group is the statuses it sums (in the order the
 *  API counts them); a click filters by them. `unknown` shows only when there is one. */
const GROUPS = [
  { key: "waiting", statuses: ["new", "scheduling", "scheduled", "queued", "restoring"] },
  { key: "paused", statuses: ["pending"] },
  { key: "running", statuses: ["running", "cancelling"] },
  { key: "success", statuses: ["success"], done: true },
  { key: "failed", statuses: ["failed"], done: true },
  { key: "cancelled", statuses: ["cancelled"], done: true },
  { key: "unknown", statuses: ["unknown"], done: true, hiddenAtZero: true },
];
/** The status filter's value: "" (all), `group:{key}`, or one status. */
function statusesOf(filter) {
  if (!filter) return null;
  if (filter.startsWith("group:")) return GROUPS.find((g) => `group:${g.key}` === filter)?.statuses ?? null;
  return [filter];
}
const ACTION_LABELS = { cancel: "Cancel", pause: "Pause", resume: "Resume", retry: "Retry" };

const state = {
  base: "", //                 graphspaces/{gs}/graphs/{graph}
  filter: "", //               the status filter: "", `group:{key}` or a status
  type: "",
  name: "", //                 the name prefix filter
  times: {}, //                created_from, created_to, updated_from, updated_to: epoch ms
  limit: 50,
  pages: [""], //              the tokens of the pages visited; the last is this page's
  next: null, //               the next page's token; null on the last page
  capacity: 50, //             rows this page holds before the next page takes over
  rows: new Map(), //          id -> task, as shown
  loading: null, //            events that came while the page was being read
  selected: null, //           the id of the task in the detail
  deleting: null, //           the id of a task this page is deleting: its own answer says so
  stream: null, //             the graph's EventSource
  detailStream: null, //       the selected task's EventSource
  detailUpdate: 0, //          task_update of the state the detail shows
  detailTask: null, //         the state the detail shows
  logLast: 0, //               the id of the selected task's last log line shown
  attemptsTimer: 0, //         the pending read of the selected task's attempts
  deliveriesTimer: 0, //       the next read of the selected task's webhook deliveries
  actions: null, //            status -> the actions it allows, as GET /actions says
  counts: null, //             the last counts read
  countDetail: false, //       whether each status's counter is shown
};

// --- rendering ----------------------------------------------------------------------

function statusBadge(status) {
  return el("span", { className: `status s-${status}`, text: status });
}

function progressBar(task) {
  const { value, max, fraction, label } = progressOf(task);
  const fill = el("span", { className: "fill" });
  fill.style.width = `${(fraction * 100).toFixed(1)}%`;
  return el(
    "span",
    {
      className: `progress s-${task.task_status}`,
      attrs: {
        role: "progressbar",
        "aria-valuemin": "0",
        "aria-valuemax": String(max),
        "aria-valuenow": String(value),
        "aria-label": `progress of task ${task.id}`,
      },
    },
    [fill, el("span", { className: "label", text: label })],
  );
}

/** A waiting task's due time (`task_run_at`), kept current by the clock below. */
function dueOf(task) {
  const at = task.task_run_at;
  if (!at) return [];
  return [el("span", { className: "due", text: dueText(at), attrs: { "data-due": String(at), title: `due at ${fullTime(at)}` } })];
}

function tickDue() {
  const now = Date.now();
  for (const node of document.querySelectorAll("[data-due]")) {
    const text = dueText(Number(node.dataset.due), now);
    const shown = node.dataset.dueFormat === "detail" ? `${formatTime(Number(node.dataset.due))} (${text})` : text;
    if (node.textContent !== shown) node.textContent = shown;
  }
}

function timeCell(ms) {
  return el("td", { className: "time", text: formatTime(ms), attrs: { title: fullTime(ms) } });
}

function rowOf(task) {
  const row = el("tr", { attrs: { "data-id": String(task.id), tabindex: "0" } }, [
    el("td", { className: "num", text: String(task.id) }),
    el("td", { className: "name", text: task.task_name, attrs: { title: task.task_name } }),
    el("td", { className: "type", text: task.task_type }),
    el("td", {}, [el("span", { className: "status-cell" }, [statusBadge(task.task_status), ...dueOf(task)])]),
    el("td", {}, [progressBar(task)]),
    timeCell(task.task_create),
    timeCell(task.task_update),
    el("td", {
      className: "num retries",
      text: String(task.task_retries),
      attrs: { title: `${task.task_retries} of at most ${task.task_max_retries ?? "?"} retries` },
    }),
  ]);
  if (task.id === state.selected) row.classList.add("selected");
  return row;
}

function renderRows() {
  const body = $("#tasks tbody");
  const ids = [...state.rows.keys()].sort((a, b) => b - a); // newest first, as the page is read
  body.replaceChildren(...ids.map((id) => rowOf(state.rows.get(id))));
  $("#empty").hidden = ids.length > 0;
  renderPager();
}

function renderRow(task) {
  const old = $(`#tasks tbody tr[data-id="${task.id}"]`);
  if (old) {
    // the row itself stays (its cells are new): a click or the focus on it is not lost to
    // a progress report that lands meanwhile
    const fresh = rowOf(task);
    old.className = fresh.className;
    old.replaceChildren(...fresh.childNodes);
    return;
  }
  // a new row goes where its id belongs: rows are newest first, as the page is read
  const body = $("#tasks tbody");
  const after = [...body.rows].find((row) => Number(row.dataset.id) < task.id);
  body.insertBefore(rowOf(task), after ?? null);
  $("#empty").hidden = true;
}

function removeRow(id) {
  $(`#tasks tbody tr[data-id="${id}"]`)?.remove();
  $("#empty").hidden = state.rows.size > 0;
}

function renderPager() {
  $("#first").disabled = state.pages.length === 1;
  $("#prev").disabled = state.pages.length === 1;
  $("#next").disabled = state.next === null;
  $("#page-label").textContent = `Page ${state.pages.length}`;
}

// --- counts ---------------------------------------------------------------------------

let countsTimer = null;

function countChip(count, label, attrs, classes, title) {
  const chip = el("button", { className: `count ${classes}`, attrs: { type: "button", title, ...attrs } }, [
    el("span", { className: "n", text: String(count) }),
    el("span", { className: "label", text: label }),
  ]);
  if (count === 0) chip.classList.add("zero");
  if (state.filter === attrs["data-filter"]) {
    chip.classList.add("active");
    chip.setAttribute("aria-pressed", "true");
  } else {
    chip.setAttribute("aria-pressed", "false");
  }
  return chip;
}

function renderCounts() {
  if (!state.counts) return;
  // the counters are drawn anew: the one that had the focus keeps it
  const focused = document.activeElement?.closest?.(".counts button[data-filter]");
  const refocus = focused ? `${focused.parentElement.id === "count-detail" ? "#count-detail" : "#counts"} [data-filter="${focused.dataset.filter}"]` : null;
  const { counts, total } = state.counts;
  const sum = (statuses) => statuses.reduce((n, s) => n + (counts[s] ?? 0), 0);
  const chip = (group) =>
    countChip(
      sum(group.statuses),
      group.key,
      { "data-group": group.key, "data-filter": group.statuses.length === 1 ? group.statuses[0] : `group:${group.key}` },
      `s-${group.statuses.length === 1 ? group.statuses[0] : group.key}`,
      `show ${group.key} tasks (${group.statuses.join(", ")})`,
    );
  const shown = GROUPS.filter((g) => !(g.hiddenAtZero && sum(g.statuses) === 0));
  const done = el("span", { className: "done-group", attrs: { role: "group", "aria-label": "done" } }, [
    el("span", { className: "group-label", text: "done" }),
    ...shown.filter((g) => g.done).map(chip),
  ]);
  const toggle = el("button", {
    className: "ghost count-toggle",
    text: state.countDetail ? "each status ▾" : "each status ▸",
    attrs: { type: "button", id: "count-toggle", "aria-expanded": String(state.countDetail), "aria-controls": "count-detail" },
  });
  $("#counts").replaceChildren(
    countChip(total, "all", { "data-group": "", "data-filter": "" }, "total", "show every task"),
    ...shown.filter((g) => !g.done).map(chip),
    done,
    toggle,
  );
  const detail = $("#count-detail");
  detail.hidden = !state.countDetail;
  detail.replaceChildren(
    ...Object.entries(counts).map(([status, count]) =>
      countChip(count, status, { "data-status": status, "data-filter": status }, `s-${status}`, `show ${status} tasks`),
    ),
  );
  if (refocus) document.querySelector(refocus)?.focus();
}

async function refreshCounts() {
  const base = state.base;
  const counts = await api.counts(base);
  if (base !== state.base) return;
  state.counts = counts;
  renderCounts();
}

function fillStatusFilter(statuses) {
  const select = $("#filter-status");
  const groups = el(
    "optgroup",
    { attrs: { label: "Groups" } },
    GROUPS.filter((g) => g.statuses.length > 1).map((g) =>
      el("option", { text: `${g.key} (${g.statuses.length} statuses)`, attrs: { value: `group:${g.key}`, title: g.statuses.join(", ") } }),
    ),
  );
  const each = el(
    "optgroup",
    { attrs: { label: "Each status" } },
    statuses.map((s) => el("option", { text: s, attrs: { value: s } })),
  );
  select.replaceChildren(el("option", { text: "all", attrs: { value: "" } }), groups, each);
}

function setFilter(filter) {
  state.filter = filter;
  $("#filter-status").value = filter;
  renderCounts();
  restart();
}

/** Counts follow the events: re-read at most a few times a second while tasks change. */
function countsChanged() {
  if (countsTimer !== null) return;
  countsTimer = setTimeout(() => {
    countsTimer = null;
    refreshCounts().catch(() => {});
  }, 250);
}

// --- the list -------------------------------------------------------------------------

function matches(task) {
  const statuses = statusesOf(state.filter);
  const { created_from: cf, created_to: ct, updated_from: uf, updated_to: ut } = state.times;
  return (
    (!statuses || statuses.includes(task.task_status)) &&
    (!state.type || task.task_type === state.type) &&
    (!state.name || task.task_name.startsWith(state.name)) &&
    (cf === undefined || task.task_create >= cf) &&
    (ct === undefined || task.task_create < ct) &&
    (uf === undefined || task.task_update >= uf) &&
    (ut === undefined || task.task_update < ut)
  );
}

/** The list's filters as the server takes them (GET …/tasks, POST …/tasks/bulk): the ones set. */
function filterQuery() {
  return {
    status: statusesOf(state.filter)?.join(","),
    type: state.type || undefined,
    name: state.name || undefined,
    ...state.times,
  };
}

/** The time inputs as epoch ms (a datetime-local value is the browser's local time). */
function readTimes() {
  const times = {};
  for (const key of ["created_from", "created_to", "updated_from", "updated_to"]) {
    const value = $(`#filter-${key.replace("_", "-")}`).value;
    const ms = value ? new Date(value).getTime() : NaN;
    if (Number.isFinite(ms)) times[key] = ms;
  }
  state.times = times;
}

/** A bulk action on every task the filters match, after the person confirms it with the
 *  count (up to 1,000, then "more than"); no filter asks about every task of the graph. */
async function bulkApply() {
  const action = $("#bulk-action").value;
  const query = filterQuery();
  const filtered = Object.values(query).some((v) => v !== undefined);
  const out = $("#bulk-result");
  try {
    const preview = await api.list(state.base, { ...query, limit: 1001 });
    const n = preview.tasks.length;
    if (n === 0) {
      showMessage(out, "No task matches the filters.", "info");
      return;
    }
    const many = n > 1000 ? "more than 1,000" : n.toLocaleString("en-US");
    const scope = filtered ? "matching the filters" : "of this graph (no filter is set)";
    if (!window.confirm(`${action[0].toUpperCase()}${action.slice(1)} ${many} tasks ${scope}?`)) return;
    const result = await api.bulk(state.base, action, filtered ? query : { all: "true" });
    const refused = Object.entries(result.refused).map(([why, count]) => `${count} refused: ${why}`);
    const done = `${result.changed} of ${result.matched} matching tasks changed (${action}).`;
    showMessage(out, [done, ...refused].join(" "), "ok");
  } catch (error) {
    showMessage(out, errorText(error), "error");
  }
  restart();
}

/** Whether a task that starts to match belongs on this page (newest first): between its
 *  first and last rows, above them on the first page (a new task), below them on the last. */
function fitsPage(id) {
  const ids = [...state.rows.keys()];
  const isFirst = state.pages.length === 1;
  const isLast = state.next === null;
  if (ids.length === 0) return isFirst || isLast;
  return (isFirst || id < Math.max(...ids)) && (isLast || id > Math.min(...ids));
}

let loadSerial = 0;

async function loadPage() {
  const serial = ++loadSerial;
  state.loading ??= [];
  showMessage($("#list-error"), "", "error");
  try {
    // newest first; the filters are the server's (a group's statuses comma-separated)
    const body = await api.list(state.base, {
      ...filterQuery(),
      order: "desc",
      limit: state.limit,
      page: state.pages.at(-1),
    });
    if (serial !== loadSerial) return; // a newer read took over
    state.next = body.page;
    state.capacity = Math.max(state.limit, body.tasks.length);
    state.rows = new Map(body.tasks.map((task) => [task.id, task]));
    renderRows();
  } catch (error) {
    if (serial !== loadSerial) return;
    showMessage($("#list-error"), errorText(error), "error");
  }
  // what changed while the page was read: applied now, each only if newer than the row
  const waiting = state.loading ?? [];
  state.loading = null;
  for (const task of waiting) applyTask(task);
}

let reloadTimer = null;

/** Reads the page again shortly; once, however many events ask meanwhile (a running task's
 *  progress reports, many a second, must not put it off for ever). */
function reloadSoon() {
  if (reloadTimer !== null) return;
  reloadTimer = setTimeout(() => {
    reloadTimer = null;
    loadPage();
  }, 200);
}

/** A task as an event or an action's answer gives it. */
function applyTask(task) {
  if (state.loading) {
    state.loading.push(task);
    return;
  }
  const shown = state.rows.get(task.id);
  // an answer can arrive after a newer event: an older state never replaces a newer one
  if (shown && task.task_update < shown.task_update) return;
  // a status or progress event may leave the input out: it never changes, so keep it
  if (shown && task.task_input === undefined && shown.task_input !== undefined) {
    task = { ...task, task_input: shown.task_input };
  }
  if (matches(task) && (shown || fitsPage(task.id))) {
    state.rows.set(task.id, task);
    renderRow(task);
    if (!shown && task.task_input === undefined) readInput(task.id);
    if (state.rows.size > state.capacity) reloadSoon(); // full: the next page takes over
  } else if (shown) {
    state.rows.delete(task.id); // no longer what the filters show
    removeRow(task.id);
  }
  if (task.id === state.selected) showInDetail(task);
}

/** A task that came onto the page by a status event (it started to match the filter) has
 *  no input: it is read once, for its progress bar's scale and the detail. */
async function readInput(id) {
  const base = state.base;
  let full;
  try {
    full = await api.get(base, id);
  } catch {
    return; // deleted meanwhile: its event says so
  }
  const row = state.rows.get(id);
  if (base !== state.base || !row || row.task_input !== undefined || full.task_input === undefined) return;
  const task = { ...row, task_input: full.task_input };
  state.rows.set(id, task);
  renderRow(task);
  if (id === state.selected && state.detailTask?.id === id && state.detailTask.task_input === undefined) {
    state.detailTask = { ...state.detailTask, task_input: full.task_input };
    renderDetail(state.detailTask);
  }
}

function forgetTask(id) {
  if (state.rows.delete(id)) removeRow(id);
  if (id === state.selected) {
    $("#detail").classList.add("deleted");
    if (state.detailTask?.id === id) renderActions(state.detailTask);
    // deleted from this page: the delete's own answer says so, whichever comes first
    if (state.deleting !== id) showMessage($("#action-message"), `Task ${id} was deleted.`, "info");
  }
}

// --- the event stream -----------------------------------------------------------------

function setLive(mode) {
  const live = $("#live");
  live.dataset.state = mode;
  live.textContent = { live: "live", reconnecting: "reconnecting…", connecting: "connecting…" }[mode];
}

/** Follows the graph's events; the browser reconnects by itself, with Last-Event-ID, so
 *  nothing is missed across a dropped connection or a restart of the service. */
function connect() {
  state.stream?.close();
  setLive("connecting");
  const stream = new EventSource(url(`${state.base}/events`));
  state.stream = stream;
  const opened = new Promise((resolve) => {
    stream.addEventListener("open", resolve, { once: true });
    stream.addEventListener("error", resolve, { once: true });
  });
  stream.addEventListener("open", () => setLive("live"));
  stream.addEventListener("error", () => setLive("reconnecting"));
  for (const kind of ["task.created", "task.status", "task.progress"]) {
    stream.addEventListener(kind, (event) => {
      applyTask(JSON.parse(event.data));
      if (kind !== "task.progress") countsChanged();
    });
  }
  stream.addEventListener("task.created", (event) => taskCreated(JSON.parse(event.data)));
  stream.addEventListener("task.deleted", (event) => {
    forgetTask(JSON.parse(event.data).id);
    countsChanged();
  });
  return opened;
}

// --- a task's detail ------------------------------------------------------------------

function field(name, value) {
  return [el("dt", { text: name }), el("dd", {}, [value instanceof Node ? value : document.createTextNode(value)])];
}

function renderDetail(task) {
  $("#detail-title").textContent = `Task ${task.id}`;
  $("#detail-fields").replaceChildren(
    ...field("Name", task.task_name),
    ...field("Type", task.task_type),
    ...field("Status", statusBadge(task.task_status)),
    ...(task.task_run_at ? field("Due", dueField(task.task_run_at)) : []),
    ...(task.task_schedule ? field("Schedule", `${task.task_schedule}, fire time ${fullTime(task.task_schedule_fire)}`) : []),
    ...(task.task_dependencies ? field("Waits for", dependenciesField(task)) : []),
    ...field("Progress", progressBar(task)),
    ...field("Created", fullTime(task.task_create)),
    ...field("Updated", fullTime(task.task_update)),
    ...field("Retries", `${task.task_retries} of at most ${task.task_max_retries ?? "?"}`),
    ...field("Priority", String(task.task_priority ?? 0)),
    ...field("Server", task.task_server ?? "—"),
    ...field("Callable", task.task_callable),
  );
  $("#detail-input").textContent = prettyJson(task.task_input) || "—";
  $("#detail-result").textContent = prettyJson(task.task_result) || "—";
  $("#detail").dataset.status = task.task_status;
  renderActions(task);
}

/** The tasks it waits for (task_dependencies), each a button that opens it, and how many
 *  of them have not succeeded yet while it has not started (task_dependencies_left). */
function dependenciesField(task) {
  const node = el("span", { className: "dependencies" });
  for (const id of task.task_dependencies) {
    const button = el("button", { className: "dependency", text: String(id), attrs: { type: "button", title: `Open task ${id}` } });
    button.addEventListener("click", () => select(id));
    node.append(button, " ");
  }
  const left = task.task_dependencies_left;
  if (left) node.append(el("span", { className: "dependencies-left", text: `(${left} not succeeded yet)` }));
  return node;
}

function dueField(at) {
  const node = el("span", { className: "due", attrs: { "data-due": String(at), "data-due-format": "detail", title: fullTime(at) } });
  node.textContent = `${formatTime(at)} (${dueText(at)})`;
  return node;
}

/** Only what the task's status allows is enabled, as GET /actions says (the rule the API
 *  applies). Delete is a plain delete for a completed task; any other needs force, and asks. */
function renderActions(task) {
  const deleted = $("#detail").classList.contains("deleted");
  const allowed = state.actions?.[task.task_status];
  for (const button of document.querySelectorAll("#detail [data-action]")) {
    const action = button.dataset.action;
    let enabled;
    if (action === "delete") {
      const force = allowed ? !allowed.includes("delete") && allowed.includes("force_delete") : false;
      button.dataset.force = String(force);
      button.textContent = force ? "Force delete…" : "Delete";
      enabled = !allowed || allowed.includes("delete") || allowed.includes("force_delete");
    } else {
      enabled = !allowed || allowed.includes(action);
    }
    enabled &&= !deleted;
    button.disabled = !enabled;
    const name = action === "delete" ? button.textContent.replace("…", "") : ACTION_LABELS[action];
    button.title = enabled ? "" : deleted ? "the task was deleted" : `${name}: not possible for a ${task.task_status} task`;
  }
}

/** Both streams and the actions' answers bring the selected task: the newest state wins. */
function showInDetail(task) {
  if (task.id !== state.selected || task.task_update < state.detailUpdate) return;
  // a status or progress event may leave the input out: it never changes, so keep it
  const before = state.detailTask;
  if (before?.id === task.id && task.task_input === undefined && before.task_input !== undefined) {
    task = { ...task, task_input: before.task_input };
  }
  state.detailUpdate = task.task_update;
  state.detailTask = task;
  renderDetail(task);
}

// --- a task's log: its lines as they come -------------------------------------------------

/** The lines shown at most: the oldest go first past it (the route has them all). */
const LOG_SHOWN = 2000;

/** Reads the selected task's lines after the last one shown, page by page. */
async function loadLog(id) {
  for (;;) {
    let body;
    try {
      body = await api.logs(state.base, id, state.logLast);
    } catch (error) {
      if (state.selected === id && error.status !== 404) {
        $("#log").replaceChildren(el("li", { className: "none", text: errorText(error) }));
      }
      return;
    }
    if (state.selected !== id) return;
    appendLog(body.lines);
    if (body.lines.length < 1000) return;
  }
}

function appendLog(lines) {
  const list = $("#log");
  list.querySelector("li.none")?.remove();
  const fresh = lines.filter((line) => line.id > state.logLast);
  if (!fresh.length) {
    if (!list.children.length) list.append(el("li", { className: "none", text: "no lines yet" }));
    return;
  }
  const follow = list.scrollTop + list.clientHeight >= list.scrollHeight - 4; // at the bottom: stay there
  list.append(...fresh.map(logItem));
  state.logLast = fresh[fresh.length - 1].id;
  while (list.children.length > LOG_SHOWN) list.firstElementChild.remove();
  if (follow) list.scrollTop = list.scrollHeight;
}

function logItem(line) {
  return el("li", { className: `l-${line.level}`, attrs: { "data-line": String(line.id) } }, [
    el("time", { text: formatTime(line.time, { millis: true }), attrs: { title: fullTime(line.time) } }),
    el("span", { className: "level", text: line.level }),
    el("span", { className: "attempt", text: line.attempt === null ? "" : `#${line.attempt}` }),
    el("span", { className: "text", text: line.text }),
  ]);
}

// --- a task's attempts: each run, how it ended, and a failure's error ---------------------

/** Reads the selected task's attempts again, once for a burst of status events (a stream
 *  replaying a task's history brings them all at once). */
function attemptsSoon(id) {
  clearTimeout(state.attemptsTimer);
  state.attemptsTimer = setTimeout(() => loadAttempts(id), 150);
}

async function loadAttempts(id) {
  let body;
  try {
    body = await api.attempts(state.base, id);
  } catch (error) {
    if (state.selected === id && error.status !== 404) {
      $("#attempts").replaceChildren(el("li", { className: "none", text: errorText(error) }));
    }
    return;
  }
  if (state.selected === id) renderAttempts(body.attempts);
}

function renderAttempts(attempts) {
  const list = $("#attempts");
  const shown = JSON.stringify(attempts);
  if (list.dataset.shown === shown) return; // unchanged: an open traceback stays open
  list.dataset.shown = shown;
  if (!attempts.length) {
    list.replaceChildren(el("li", { className: "none", text: "not run yet" }));
    return;
  }
  const open = new Set([...list.querySelectorAll("li[data-attempt] details[open]")].map((d) => d.closest("li").dataset.attempt));
  list.replaceChildren(...attempts.map(attemptItem));
  for (const number of open) list.querySelector(`li[data-attempt="${number}"] details`)?.setAttribute("open", "");
}

function attemptItem(attempt) {
  const where = [attempt.server, attempt.replica].filter(Boolean).join(" · ");
  const ran = attempt.end === null ? null : attempt.end - attempt.start;
  const took = ran === null ? "running" : ran < 1000 ? `${ran} ms` : span(ran);
  const head = el("div", { className: "attempt-head" }, [
    el("span", { className: "number", text: `#${attempt.attempt}` }),
    el("span", { className: `status s-${attempt.outcome}`, text: attempt.outcome.replace("_", " ") }),
    el("time", { text: formatTime(attempt.start), attrs: { title: fullTime(attempt.start) } }),
    el("span", { className: "note", text: took }),
  ]);
  const parts = [head, el("div", { className: "where note", text: where })];
  const error = attempt.error;
  if (error) {
    const text = [error.type, error.message].filter(Boolean).join(": ");
    parts.push(el("div", { className: "attempt-error", text }));
    if (error.traceback) {
      parts.push(
        el("details", {}, [el("summary", { text: "Traceback" }), el("pre", { className: "traceback", text: error.traceback })]),
      );
    }
  }
  if (attempt.checkpointed) parts.push(el("div", { className: "note", text: "stored a checkpoint" }));
  return el("li", { className: `s-${attempt.outcome}`, attrs: { "data-attempt": String(attempt.attempt), "data-outcome": attempt.outcome } }, parts);
}

// --- a task's webhook deliveries: each one's state, tries and last answer ------------------

/** Reads the selected task's deliveries again soon: after a status step (which may have
 *  written one), and every few seconds while one is pending (their tries make no event). */
function deliveriesSoon(id, ms = 300) {
  clearTimeout(state.deliveriesTimer);
  state.deliveriesTimer = setTimeout(() => loadDeliveries(id), ms);
}

async function loadDeliveries(id) {
  let body;
  try {
    body = await api.deliveries(state.base, id);
  } catch (error) {
    if (state.selected === id && error.status !== 404) {
      $("#deliveries").replaceChildren(el("li", { className: "none", text: errorText(error) }));
    }
    return;
  }
  if (state.selected !== id) return;
  const deliveries = body.deliveries;
  const list = $("#deliveries");
  list.replaceChildren(
    ...(deliveries.length ? deliveries.map(deliveryItem) : [el("li", { className: "none", text: "none" })]),
  );
  if (deliveries.some((d) => d.state === "pending")) deliveriesSoon(id, 2000);
}

function deliveryItem(delivery) {
  const answer = delivery.last_answer;
  const said = answer === null ? "not tried yet" : answer.code !== null ? `HTTP ${answer.code}` : answer.error;
  const tries = `${delivery.attempts} ${delivery.attempts === 1 ? "try" : "tries"}`;
  const head = el("div", { className: "attempt-head" }, [
    el("span", { className: "number", text: delivery.hook }),
    el("span", { className: `status s-${delivery.state}`, text: delivery.state }),
    el("span", { className: "note", text: `on ${delivery.status}` }),
    el("span", { className: "note", text: tries }),
  ]);
  const parts = [head, el("div", { className: "where note", text: delivery.url })];
  parts.push(el("div", { className: "note", text: `last answer: ${said}` }));
  if (delivery.next_try !== null) {
    parts.push(el("div", { className: "note", text: `next try ${formatTime(delivery.next_try)}`, attrs: { title: fullTime(delivery.next_try) } }));
  }
  return el("li", { className: `s-${delivery.state}`, attrs: { "data-delivery": delivery.delivery, "data-state": delivery.state } }, parts);
}

function addTimeline(kind, task, eventId) {
  const label = kind === "task.created" ? "created" : "";
  $("#timeline").append(
    el("li", { className: `s-${task.task_status}`, attrs: { "data-event": eventId, "data-status": task.task_status } }, [
      el("time", { text: formatTime(task.task_update, { millis: true }), attrs: { title: fullTime(task.task_update) } }),
      statusBadge(task.task_status),
      el("span", { className: "note", text: label }),
    ]),
  );
}

async function select(id) {
  state.selected = id;
  state.detailUpdate = 0;
  state.detailTask = null;
  for (const row of document.querySelectorAll("#tasks tbody tr.selected")) row.classList.remove("selected");
  $(`#tasks tbody tr[data-id="${id}"]`)?.classList.add("selected");
  const detail = $("#detail");
  detail.hidden = false;
  detail.classList.remove("deleted");
  detail.scrollIntoView({ block: "nearest" }); // below the table on a narrow screen
  showMessage($("#action-message"), "", "info");
  $("#timeline").replaceChildren();
  $("#attempts").replaceChildren();
  delete $("#attempts").dataset.shown;
  $("#deliveries").replaceChildren();
  clearTimeout(state.deliveriesTimer);
  $("#log").replaceChildren();
  state.logLast = 0;
  state.detailStream?.close();
  state.detailStream = null;
  try {
    const task = state.rows.get(id) ?? (await api.get(state.base, id));
    if (state.selected !== id) return;
    showInDetail(task);
    loadAttempts(id);
    loadDeliveries(id);
    await loadLog(id); // before the stream: its task.log events go on from the last line read
    if (state.selected !== id) return;
  } catch (error) {
    showMessage($("#action-message"), errorText(error), "error");
    return;
  }
  // The task's stream from event 0 replays its stored history (within the event
  // retention), then follows it live.
  const stream = new EventSource(url(`${state.base}/tasks/${id}/events`, { last_event_id: 0 }));
  state.detailStream = stream;
  const follow = (kind) => (event) => {
    const task = JSON.parse(event.data);
    if (kind !== "task.progress") addTimeline(kind, task, event.lastEventId);
    if (kind === "task.status") {
      attemptsSoon(id); // a run starts or ends with a status step
      deliveriesSoon(id); // and the step may have written a delivery
    }
    showInDetail(task);
  };
  for (const kind of ["task.created", "task.status", "task.progress"]) stream.addEventListener(kind, follow(kind));
  stream.addEventListener("task.log", (event) => {
    const body = JSON.parse(event.data);
    // a batch larger than an event carries: the lines it left out are read from the route
    if (body.omitted) loadLog(id);
    else appendLog(body.lines);
  });
  stream.addEventListener("task.deleted", () => stream.close());
}

function closeDetail() {
  state.selected = null;
  state.detailStream?.close();
  state.detailStream = null;
  $("#detail").hidden = true;
  for (const row of document.querySelectorAll("#tasks tbody tr.selected")) row.classList.remove("selected");
}

async function act(action) {
  const id = state.selected;
  if (id === null) return;
  const message = $("#action-message");
  showMessage(message, "", "info");
  try {
    if (action === "delete") {
      const force = $('#detail [data-action="delete"]').dataset.force === "true";
      const status = state.detailTask?.task_status ?? "incomplete";
      const warning =
        `Task ${id} is ${status}: delete its record anyway?` +
        (status === "running" || status === "cancelling" ? " Its job runs on, and its end is not recorded." : "");
      if (force && !window.confirm(warning)) return;
      state.deleting = id;
      try {
        await api.remove(state.base, id, force);
      } catch (error) {
        state.deleting = null;
        throw error;
      }
      showMessage(message, `Task ${id} deleted.`, "ok");
    } else {
      const task = await api.act(state.base, id, action);
      delete task.cancelled;
      applyTask(task);
      showMessage(message, `${action}: the task is ${task.task_status}.`, "ok");
    }
  } catch (error) {
    // the server's own words: why the action was refused
    showMessage(message, errorText(error), "error");
  }
}

// --- submitting -----------------------------------------------------------------------

let inputEdited = false;

function fillExample() {
  if (inputEdited) return;
  const example = EXAMPLES[$("#submit-type").value] ?? {};
  $("#submit-input").value = JSON.stringify(example, null, 2);
}

async function submit(event) {
  event.preventDefault();
  const message = $("#submit-message");
  const type = $("#submit-type").value;
  const text = $("#submit-input").value.trim();
  let input;
  try {
    input = text ? JSON.parse(text) : undefined;
  } catch (error) {
    showSubmitError(`The input is not valid JSON: ${error.message}`);
    return;
  }
  const options = {};
  for (const [name, id] of [
    ["name", "#submit-name"],
    ["priority", "#submit-priority"],
    ["max_retries", "#submit-max-retries"],
    ["delay", "#submit-delay"],
  ]) {
    const value = $(id).value.trim();
    if (value !== "") options[name] = value;
  }
  // the browser's local time, sent with its offset (as UTC): the service wants one
  const runAt = $("#submit-run-at").value;
  if (runAt) options.run_at = new Date(runAt).toISOString();
  try {
    const { task_id: id } = await api.submit(state.base, type, input, options);
    showMessage(message, `Task ${id} submitted.`, "ok");
    select(id);
  } catch (error) {
    showSubmitError(errorText(error));
  }
}

/** A refused submission says why beside the Submit button, scrolled into view and focused
 *  (a screen reader reads it out: the message is a live region). */
function showSubmitError(text) {
  const message = $("#submit-message");
  showMessage(message, text, "error");
  message.scrollIntoView({ block: "nearest" });
  message.focus({ preventScroll: true });
}

// --- set-up ---------------------------------------------------------------------------

async function showGraph(value) {
  const [graphspace, graph] = value.split("/");
  state.base = graphBase(graphspace, graph);
  state.pages = [""];
  state.rows = new Map();
  closeDetail();
  renderRows();
  // The stream first, then the page: a change between the two is not lost, it is
  // applied once the page is read.
  state.loading = [];
  await connect();
  await Promise.all([loadPage(), refreshCounts().catch(() => {}), showSchedules(state.base)]);
}

function restart() {
  state.pages = state.pages.slice(0, 1);
  loadPage();
  refreshCounts().catch(() => {});
}

async function start() {
  const [{ graphspaces }, { types }, { actions }] = await Promise.all([api.graphspaces(), api.types(), api.actions()]);
  state.actions = actions;
  fillStatusFilter(Object.keys(actions)); // every status, in the counters' order
  const lists = await Promise.all(graphspaces.map((gs) => api.graphs(gs).then(({ graphs }) => graphs.map((g) => `${gs}/${g}`))));
  const graphs = lists.flat();
  $("#graph").replaceChildren(...graphs.map((g) => el("option", { text: g, attrs: { value: g } })));
  $("#filter-type").append(...types.map((t) => el("option", { text: t, attrs: { value: t } })));
  $("#submit-type").replaceChildren(...types.map((t) => el("option", { text: t, attrs: { value: t } })));
  if (types.includes("sleep")) $("#submit-type").value = "sleep";
  fillExample();
  startSchedules(types);
  startTypes();

  $("#graph").addEventListener("change", (e) => showGraph(e.target.value));
  $("#filter-status").addEventListener("change", (e) => setFilter(e.target.value));
  $("#filter-type").addEventListener("change", (e) => {
    state.type = e.target.value;
    restart();
  });
  // the name is read as it is typed, a moment after the last key
  let nameTimer = null;
  $("#filter-name").addEventListener("input", (e) => {
    clearTimeout(nameTimer);
    nameTimer = setTimeout(() => {
      state.name = e.target.value;
      restart();
    }, 250);
  });
  for (const key of ["created-from", "created-to", "updated-from", "updated-to"]) {
    $(`#filter-${key}`).addEventListener("change", () => {
      readTimes();
      restart();
    });
  }
  $("#bulk-apply").addEventListener("click", bulkApply);
  $("#limit").addEventListener("change", (e) => {
    state.limit = Number(e.target.value);
    restart();
  });
  // a counter filters by its statuses; a second click on it shows every task again
  $(".counts").addEventListener("click", (e) => {
    if (e.target.closest("#count-toggle")) {
      state.countDetail = !state.countDetail;
      renderCounts();
      $("#count-toggle").focus();
      return;
    }
    const chip = e.target.closest("button[data-filter]");
    if (chip) setFilter(state.filter === chip.dataset.filter ? "" : chip.dataset.filter);
  });
  $("#first").addEventListener("click", () => restart());
  $("#prev").addEventListener("click", () => {
    state.pages.pop();
    loadPage();
  });
  $("#next").addEventListener("click", () => {
    if (state.next === null) return;
    state.pages.push(state.next);
    loadPage();
  });
  const body = $("#tasks tbody");
  body.addEventListener("click", (e) => {
    const row = e.target.closest("tr[data-id]");
    if (row) select(Number(row.dataset.id));
  });
  body.addEventListener("keydown", (e) => {
    const row = e.target.closest("tr[data-id]");
    if (row && (e.key === "Enter" || e.key === " ")) {
      e.preventDefault();
      select(Number(row.dataset.id));
    }
  });
  $("#detail-close").addEventListener("click", closeDetail);
  for (const button of document.querySelectorAll("#detail [data-action]")) {
    button.addEventListener("click", () => act(button.dataset.action));
  }
  $("#submit-type").addEventListener("change", fillExample);
  $("#submit-input").addEventListener("input", () => {
    inputEdited = true;
  });
  $("#submit").addEventListener("submit", submit);

  setInterval(tickDue, 1000); // "due in 4 min" counts down

  if (graphs.length) await showGraph(graphs[0]);
  document.body.dataset.ready = "true";
}

start().catch((error) => showMessage($("#list-error"), errorText(error), "error"));
