// The public API, with the key the user signed in with (kept in sessionStorage: it lasts as long
// as the tab and is sent only to this origin). Everything the console shows comes through here.

const KEY = "corral.console.apiKey";
const VERSION = "2023-06-01";

export const auth = {
  get key() {
    return sessionStorage.getItem(KEY);
  },
  signIn(key) {
    sessionStorage.setItem(KEY, key);
  },
  signOut() {
    sessionStorage.removeItem(KEY);
  },
};

export class ApiError extends Error {
  constructor(status, type, message) {
    super(message);
    this.status = status;
    this.type = type;
  }
}

function headers(extra = {}) {
  return { "x-api-key": auth.key ?? "", "anthropic-version": VERSION, ...extra };
}

/** `/v1/...` with query parameters; an array value becomes `name[]` repeated. */
export function url(path, query = {}) {
  const u = new URL(path, location.origin);
  for (const [name, value] of Object.entries(query)) {
    if (value == null || value === "") continue;
    if (Array.isArray(value)) value.forEach((v) => u.searchParams.append(`${name}[]`, v));
    else u.searchParams.set(name, value);
  }
  return u;
}

async function failure(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    // not JSON: the status says enough
  }
  const error = body?.error;
  const message = error?.message ?? `${response.status} ${response.statusText}`;
  return new ApiError(response.status, error?.type ?? "api_error", message);
}

export async function api(path, { method = "GET", query, body, signal } = {}) {
  const init = { method, headers: headers(body ? { "content-type": "application/json" } : {}), signal };
  if (body) init.body = JSON.stringify(body);
  const response = await fetch(url(path, query), init);
  if (!response.ok) throw await failure(response);
  return response.json();
}

/** Every item of a paged list (`next_page` cursors), up to `max`. */
export async function all(path, query = {}, { max = 5000, signal } = {}) {
  const items = [];
  let page;
  do {
    const answer = await api(path, { query: { ...query, page }, signal });
    items.push(...answer.data);
    page = answer.next_page;
  } while (page && items.length < max);
  return items;
}

/** Events of a session's live stream: fetch streaming, since EventSource cannot send the key. */
export async function openStream(sessionId, { signal, deltas = ["agent.message", "agent.thinking"] } = {}) {
  const response = await fetch(url(`/v1/sessions/${sessionId}/events/stream`, { event_deltas: deltas }), {
    headers: headers({ accept: "text/event-stream" }),
    signal,
  });
  if (!response.ok) throw await failure(response);
  return response.body;
}

let configPromise;

/** The console's own settings: {jaeger_url, prices}. */
export function config() {
  configPromise ??= fetch("/console/config.json").then((r) => r.json());
  return configPromise;
}

export function sendEvents(sessionId, events) {
  return api(`/v1/sessions/${sessionId}/events`, { method: "POST", body: { events } });
}
