// The server's API as the page uses it: the client's operations answered in JSON, the
// packed map, and images. Paths are relative, so the page works behind a path prefix.

const TOKEN_KEY = "chroma.token";

export class ApiError extends Error {
  constructor(status, error, detail) {
    super(detail || error || `HTTP ${status}`);
    this.status = status;
    this.error = error;
  }
}

/** A token given as ?token= is kept for this tab and taken out of the address bar. */
export function adoptTokenFromUrl() {
  const url = new URL(window.location.href);
  const token = url.searchParams.get("token");
  if (token) {
    sessionStorage.setItem(TOKEN_KEY, token);
    url.searchParams.delete("token");
    window.history.replaceState(null, "", url);
  }
}

export function setToken(token) {
  sessionStorage.setItem(TOKEN_KEY, token);
}

/** Whether a token was given: a refusal then means that one is wrong. */
export function hasToken() {
  return Boolean(sessionStorage.getItem(TOKEN_KEY));
}

function headers(extra = {}) {
  const out = { Accept: "application/json", ...extra };
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) out.Authorization = `Bearer ${token}`;
  return out;
}

async function failure(response) {
  let body = {};
  try {
    body = await response.json();
  } catch {
    // not a JSON error body: the status says enough
  }
  return new ApiError(response.status, body.error, body.detail);
}

async function call(method, path, body) {
  const init = { method, headers: headers(body ? { "Content-Type": "application/json" } : {}) };
  if (body) init.body = JSON.stringify(body);
  const response = await fetch(path, init);
  if (!response.ok) throw await failure(response);
  return response.json();
}

const space = (name) => `api/v1/spaces/${encodeURIComponent(name)}`;

export const api = {
  overview: () => call("GET", "api/v1/explorer"),
  spaces: () => call("GET", "api/v1/spaces").then((r) => r.spaces),
  get: (name, ids) => call("POST", `${space(name)}/get`, { ids }).then((r) => r.rows),
  neighbors: (name, id, k, where) =>
    call("POST", `${space(name)}/nearest_neighbors`, { ids: [id], k, where }).then((r) => r.rows),
  priorities: (name, n, where) =>
    call("POST", `${space(name)}/priorities`, { n, where }).then((r) => r.rows),
  trigger: (name, params) =>
    call("POST", `${space(name)}/triggers`, params).then((r) => r.trigger),
  rules: (name, params = {}) =>
    call("POST", `${space(name)}/run/trigger_rules`, { params }).then((r) => r.rows),
  triggers: (name) =>
    call("GET", `api/v1/triggers?space=${encodeURIComponent(name)}`).then((r) => r.triggers),
  triggerItems: (id) => call("GET", `api/v1/triggers/${id}/items`).then((r) => r.rows),
  update: (name, rows) => call("POST", `${space(name)}/update`, { rows }),
  setTriggerStatus: (id, status) =>
    call("POST", `api/v1/triggers/${id}/status`, { status }).then((r) => r.trigger),
  computePriorities: (name) =>
    call("POST", `${space(name)}/run/priority`, { params: { background: true, only_new: true } }),
  priorityStatus: (name) =>
    call("POST", `${space(name)}/run/priority_status`, { params: {} }).then((r) => r.meta),
};

/** The map of a space: coordinates, priorities and category codes as typed arrays. */
export async function fetchMap(name, algorithm, sample) {
  const query = new URLSearchParams({ algorithm });
  if (sample) query.set("sample", String(sample));
  const response = await fetch(`api/v1/explorer/spaces/${encodeURIComponent(name)}/map?${query}`, {
    headers: headers({ Accept: "application/vnd.chroma.map" }),
  });
  if (!response.ok) throw await failure(response);
  const buffer = await response.arrayBuffer();
  const length = new DataView(buffer).getUint32(0, true);
  const header = JSON.parse(new TextDecoder().decode(new Uint8Array(buffer, 4, length)));
  const n = header.count;
  let offset = 4 + length;
  const take = (Kind) => {
    const array = new Kind(buffer, offset, n);
    offset += n * Kind.BYTES_PER_ELEMENT;
    return array;
  };
  const x = take(Float32Array);
  const y = take(Float32Array);
  const priority = take(Float32Array);
  const codes = {};
  for (const field of Object.keys(header.categories)) codes[field] = take(Int32Array);
  // the header's priority summary becomes ``scores``; ``priority`` is the per-point array
  const { priority: scores, ...rest } = header;
  return { ...rest, scores, n, x, y, priority, codes };
}

const IMAGE = /\.(png|jpe?g|gif|webp|bmp)$/i;
const images = new Map();

/** A URL an <img> can show for ``uri``, or null: http(s) URLs as they are, local image
 * files through the server when it shows files (fetched with the token, as a blob). */
export function imageSource(uri, filesShown) {
  if (!uri) return Promise.resolve(null);
  if (/^https?:\/\//i.test(uri)) return Promise.resolve(uri);
  const local = uri.startsWith("file:") || uri.startsWith("/");
  if (!filesShown || !local || !IMAGE.test(uri.split(/[?#]/)[0])) return Promise.resolve(null);
  if (!images.has(uri)) {
    const loading = fetch(`api/v1/explorer/file?path=${encodeURIComponent(uri)}`, {
      headers: headers({ Accept: "image/*" }),
    })
      .then((response) => (response.ok ? response.blob() : null))
      .then((blob) => (blob ? URL.createObjectURL(blob) : null))
      .catch(() => null);
    images.set(uri, loading);
    if (images.size > 300) {
      const [oldest, url] = images.entries().next().value;
      images.delete(oldest);
      url.then((u) => u && URL.revokeObjectURL(u));
    }
  }
  return images.get(uri);
}
