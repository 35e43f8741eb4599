// The dashboard: a graph's tasks, kept current by its event stream (no polling), a task's
// detail and timeline, its actions, and a form to submit jobs.

import { api, ApiError, graphBase, url } from "./api.js";
import { formatTime, fullTime, prettyJson, progressOf } from "./format.js";

const $ = (selector) => document.querySelector(selector);

/** Example inputs for the built-in job types, so the form is ready to submit. */
const EXAMPLES = {
  sleep: { steps: 10, interval: 1.0 },
  echo: { hello: "world" },
  fail: { message: "something went wrong" },
  gremlin: { gremlin: "g.V().count()" },
};
/** With a type filter (the list API has none), pages are read until this many rows match. */
const MAX_READS_PER_PAGE = 20;

const state = {
  base: "", //                 graphspaces/{gs}/graphs/{graph}
  status: "",
  type: "",
  limit: 50,
  pages: [""], //              the tokens of the pages visited; the last is this page's
  next: null, //               the next page's token; null on the last page
  capacity: 50, //             rows this page holds before the next page takes over
  rows: new Map(), //          id -> task, as shown
  loading: null, //            events that came while the page was being read
  selected: null, //           the id of the task in the detail
  stream: null, //             the graph's EventSource
  detailStream: null, //       the selected task's EventSource
  detailUpdate: 0, //          task_update of the state the detail shows
};

// --- rendering ----------------------------------------------------------------------

function el(tag, { className, text, attrs } = {}, children = []) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  for (const [key, value] of Object.entries(attrs ?? {})) node.setAttribute(key, value);
  node.append(...children);
  return node;
}

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

function timeCell(ms) {
  return el("td", { className: "time", text: formatTime(ms), attrs: { title: fullTime(ms) } });
}

function rowOf(task) {
  const row = el("tr", { attrs: { "data-id": String(task.id), tabindex: "0" } }, [
    el("td", { className: "num", text: String(task.id) }),
    el("td", { className: "name", text: task.task_name, attrs: { title: task.task_name } }),
    el("td", { className: "type", text: task.task_type }),
    el("td", {}, [statusBadge(task.task_status)]),
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
  const ids = [...state.rows.keys()].sort((a, b) => a - b);
  body.replaceChildren(...ids.map((id) => rowOf(state.rows.get(id))));
  $("#empty").hidden = ids.length > 0;
  renderPager();
}

function renderRow(task) {
  const old = $(`#tasks tbody tr[data-id="${task.id}"]`);
  if (old) {
    old.replaceWith(rowOf(task));
    return;
  }
  // a new row goes where its id belongs: rows are in ascending id order, as the API lists them
  const body = $("#tasks tbody");
  const after = [...body.rows].find((row) => Number(row.dataset.id) > task.id);
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

function showMessage(node, text, kind) {
  node.textContent = text;
  node.className = `message ${kind}`;
  node.hidden = !text;
}

function errorText(error) {
  return error instanceof ApiError ? error.message : String(error);
}

// --- counts ---------------------------------------------------------------------------

let countsTimer = null;

async function refreshCounts() {
  const base = state.base;
  const { counts, total } = await api.counts(base);
  if (base !== state.base) return;
  const chips = Object.entries(counts).map(([status, count]) => {
    const chip = el(
      "button",
      {
        className: `count s-${status}`,
        attrs: { type: "button", "data-status": status, title: `show ${status} tasks` },
      },
      [el("span", { className: "n", text: String(count) }), el("span", { text: status })],
    );
    if (count === 0) chip.classList.add("zero");
    if (state.status === status) chip.classList.add("active");
    return chip;
  });
  const all = el("button", { className: "count total", attrs: { type: "button", "data-status": "" } }, [
    el("span", { className: "n", text: String(total) }),
    el("span", { text: "all" }),
  ]);
  if (!state.status) all.classList.add("active");
  $("#counts").replaceChildren(all, ...chips);
  const select = $("#filter-status");
  if (select.options.length === 1) {
    select.append(...Object.keys(counts).map((s) => el("option", { text: s, attrs: { value: s } })));
  }
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
  return (!state.status || task.task_status === state.status) && (!state.type || task.task_type === state.type);
}

/** Whether a task that starts to match belongs on this page: between its first and last
 *  rows, before them on the first page, after them on the last. */
function fitsPage(id) {
  const ids = [...state.rows.keys()];
  const isFirst = state.pages.length === 1;
  const isLast = state.next === null;
  if (ids.length === 0) return isLast;
  return (isFirst || id > Math.min(...ids)) && (isLast || id < Math.max(...ids));
}

let loadSerial = 0;

async function loadPage() {
  const serial = ++loadSerial;
  state.loading ??= [];
  showMessage($("#list-error"), "", "error");
  try {
    let token = state.pages.at(-1);
    const found = [];
    let reads = 0;
    do {
      const body = await api.list(state.base, {
        status: state.status || undefined,
        limit: state.limit,
        page: token,
      });
      if (serial !== loadSerial) return; // a newer read took over
      found.push(...body.tasks.filter(matches));
      token = body.page;
      reads += 1;
    } while (state.type && token !== null && found.length < state.limit && reads < MAX_READS_PER_PAGE);
    state.next = token;
    state.capacity = Math.max(state.limit, found.length);
    state.rows = new Map(found.map((task) => [task.id, task]));
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

function reloadSoon() {
  clearTimeout(reloadTimer);
  reloadTimer = setTimeout(() => loadPage(), 200);
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
  if (matches(task) && (shown || fitsPage(task.id))) {
    state.rows.set(task.id, task);
    renderRow(task);
    if (state.rows.size > state.capacity) reloadSoon(); // full: the next page takes over
  } else if (shown) {
    state.rows.delete(task.id); // no longer what the filters show
    removeRow(task.id);
  }
  if (task.id === state.selected) showInDetail(task);
}

function forgetTask(id) {
  if (state.rows.delete(id)) removeRow(id);
  if (id === state.selected) {
    $("#detail").classList.add("deleted");
    showMessage($("#action-message"), `Task ${id} was deleted.`, "info");
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
}

/** Both streams and the actions' answers bring the selected task: the newest state wins. */
function showInDetail(task) {
  if (task.id !== state.selected || task.task_update < state.detailUpdate) return;
  state.detailUpdate = task.task_update;
  renderDetail(task);
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
  for (const row of document.querySelectorAll("#tasks tbody tr.selected")) row.classList.remove("selected");
  $(`#tasks tbody tr[data-id="${id}"]`)?.classList.add("selected");
  const detail = $("#detail");
  detail.hidden = false;
  detail.classList.remove("deleted");
  detail.scrollIntoView({ block: "nearest" }); // below the table on a narrow screen
  showMessage($("#action-message"), "", "info");
  $("#timeline").replaceChildren();
  state.detailStream?.close();
  state.detailStream = null;
  try {
    const task = state.rows.get(id) ?? (await api.get(state.base, id));
    if (state.selected !== id) return;
    showInDetail(task);
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
    showInDetail(task);
  };
  for (const kind of ["task.created", "task.status", "task.progress"]) stream.addEventListener(kind, follow(kind));
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
      await api.remove(state.base, id);
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
    showMessage(message, `The input is not valid JSON: ${error.message}`, "error");
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
  try {
    const { task_id: id } = await api.submit(state.base, type, input, options);
    showMessage(message, `Task ${id} submitted.`, "ok");
    select(id);
  } catch (error) {
    showMessage(message, errorText(error), "error");
  }
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
  await Promise.all([loadPage(), refreshCounts().catch(() => {})]);
}

function restart() {
  state.pages = state.pages.slice(0, 1);
  loadPage();
  refreshCounts().catch(() => {});
}

async function start() {
  const [{ graphspaces }, { types }] = await Promise.all([api.graphspaces(), api.types()]);
  const lists = await Promise.all(graphspaces.map((gs) => api.graphs(gs).then(({ graphs }) => graphs.map((g) => `${gs}/${g}`))));
  const graphs = lists.flat();
  $("#graph").replaceChildren(...graphs.map((g) => el("option", { text: g, attrs: { value: g } })));
  $("#filter-type").append(...types.map((t) => el("option", { text: t, attrs: { value: t } })));
  $("#submit-type").replaceChildren(...types.map((t) => el("option", { text: t, attrs: { value: t } })));
  if (types.includes("sleep")) $("#submit-type").value = "sleep";
  fillExample();

  $("#graph").addEventListener("change", (e) => showGraph(e.target.value));
  $("#filter-status").addEventListener("change", (e) => {
    state.status = e.target.value;
    restart();
  });
  $("#filter-type").addEventListener("change", (e) => {
    state.type = e.target.value;
    restart();
  });
  $("#limit").addEventListener("change", (e) => {
    state.limit = Number(e.target.value);
    restart();
  });
  $("#counts").addEventListener("click", (e) => {
    const chip = e.target.closest("button[data-status]");
    if (!chip) return;
    state.status = state.status === chip.dataset.status ? "" : chip.dataset.status;
    $("#filter-status").value = state.status;
    restart();
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

  if (graphs.length) await showGraph(graphs[0]);
  document.body.dataset.ready = "true";
}

start().catch((error) => showMessage($("#list-error"), errorText(error), "error"));
