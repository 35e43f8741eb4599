// The service's API as the page uses it. Every error answer is HugeGraph's body
// {"exception", "message", "cause"}; it becomes an ApiError whose message is the server's.

// The service's root, wherever it is mounted: this file is served at {root}ui/api.js.
export const root = new URL("../", import.meta.url);

/** An absolute URL of the service; query values that are undefined or null are left out
 *  (an empty string is kept: `page=` asks for the first page). */
export function url(path, query = {}) {
  const address = new URL(path, root);
  for (const [key, value] of Object.entries(query)) {
    if (value !== undefined && value !== null) address.searchParams.set(key, String(value));
  }
  return address;
}

export class ApiError extends Error {
  constructor(status, body) {
    super(body?.message || `The service answered ${status}`);
    this.status = status;
    this.exception = body?.exception ?? "";
    this.cause = body?.cause ?? "";
  }
}

async function request(method, path, { query, body } = {}) {
  const init = { method, headers: { Accept: "application/json" } };
  if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers["Content-Type"] = "application/json";
  }
  let response;
  try {
    response = await fetch(url(path, query), init);
  } catch (error) {
    throw new ApiError(0, { message: `The service cannot be reached (${error.message})` });
  }
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = { message: text };
  }
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

const part = encodeURIComponent;

/** `graphspaces/{gs}/graphs/{graph}`: the base of a graph's routes. */
export function graphBase(graphspace, graph) {
  return `graphspaces/${part(graphspace)}/graphs/${part(graph)}`;
}

export const api = {
  graphspaces: () => request("GET", "graphspaces"),
  graphs: (graphspace) => request("GET", `graphspaces/${part(graphspace)}/graphs`),
  types: () => request("GET", "types"),
  actType: (type, action) => request("PUT", `types/${part(type)}`, { query: { action } }),
  actions: () => request("GET", "actions"),
  counts: (base) => request("GET", `${base}/tasks/counts`),
  list: (base, query) => request("GET", `${base}/tasks`, { query }),
  bulk: (base, action, query) => request("POST", `${base}/tasks/bulk`, { query: { ...query, action } }),
  get: (base, id) => request("GET", `${base}/tasks/${id}`),
  attempts: (base, id) => request("GET", `${base}/tasks/${id}/attempts`),
  deliveries: (base, id) => request("GET", `${base}/tasks/${id}/deliveries`),
  logs: (base, id, after = 0) => request("GET", `${base}/tasks/${id}/logs`, { query: { after, limit: 1000 } }),
  act: (base, id, action) => request("PUT", `${base}/tasks/${id}`, { query: { action } }),
  remove: (base, id, force = false) =>
    request("DELETE", `${base}/tasks/${id}`, { query: { force: force ? "true" : undefined } }),
  schedules: (base) => request("GET", `${base}/schedules`),
  createSchedule: (base, body) => request("POST", `${base}/schedules`, { body }),
  actSchedule: (base, name, action) => request("PUT", `${base}/schedules/${part(name)}`, { query: { action } }),
  deleteSchedule: (base, name) => request("DELETE", `${base}/schedules/${part(name)}`),
  submit: (base, type, input, options) =>
    request("POST", `${base}/jobs/${part(type)}`, { query: options, body: input }),
};
