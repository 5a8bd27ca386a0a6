// Requests to the plugin's endpoints: URL building, JSON errors, a concurrency limit, and a guard
// that lets only the latest of a series of requests through.

/** An error answer of the backend (its JSON `error` text) or a failed request. */
export class ApiError extends Error {
  constructor(message, status) {
    super(message);
    this.name = "ApiError";
    this.status = status;
  }
}

/**
 * GETs `endpoint?params` relative to the plugin's base URL and returns the parsed JSON.
 * Parameters that are null/undefined are left out; values are URL-encoded.
 */
export async function getJson(endpoint, params = {}, { signal } = {}) {
  const query = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value !== null && value !== undefined) query.set(key, String(value));
  }
  const url = query.toString() ? `${endpoint}?${query}` : endpoint;
  let response;
  try {
    response = await fetch(url, { headers: { Accept: "application/json" }, signal });
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new ApiError(`The request ${url} failed: ${error.message}`, 0);
  }
  const text = await response.text();
  let body = null;
  try {
    body = text ? JSON.parse(text) : null;
  } catch {
    body = null;
  }
  if (!response.ok) {
    const detail = body && typeof body.error === "string" ? body.error : text.trim().slice(0, 300);
    throw new ApiError(detail || `${endpoint}: HTTP ${response.status}`, response.status);
  }
  if (body === null) throw new ApiError(`${endpoint}: the answer is not JSON`, response.status);
  if (typeof body.error === "string") throw new ApiError(body.error, response.status);
  return body;
}

/**
 * Calls `worker(item, index)` for every item with at most `limit` calls running at once, in
 * order of the items; resolves when all are settled (a worker's failure does not stop the rest).
 */
export async function mapLimited(items, limit, worker) {
  let next = 0;
  const results = new Array(items.length);
  async function lane() {
    while (next < items.length) {
      const index = next;
      next += 1;
      try {
        results[index] = { ok: true, value: await worker(items[index], index) };
      } catch (error) {
        results[index] = { ok: false, error };
      }
    }
  }
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, lane));
  return results;
}

/**
 * A ticket counter for "only the latest request counts": `take()` returns a ticket, and
 * `isCurrent(ticket)` is false once a newer ticket was taken. `signal` belongs to the current
 * ticket and is aborted when a newer one is taken, so superseded requests stop.
 */
export class Latest {
  constructor() {
    this.counter = 0;
    this.controller = null;
  }

  take() {
    this.counter += 1;
    if (this.controller) this.controller.abort();
    this.controller = new AbortController();
    return this.counter;
  }

  get signal() {
    return this.controller ? this.controller.signal : undefined;
  }

  isCurrent(ticket) {
    return ticket === this.counter;
  }
}
