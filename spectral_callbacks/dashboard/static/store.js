// The data shared by the views: the `runs` answer and cached per-run details and overviews.
// `reset()` forgets everything (reload), since live runs grow.

import { getJson, mapLimited } from "./api.js";

export const FETCH_LIMIT = 4;

let runsAnswer = { runs: [], unreadable: [], metrics: [], default_metric: null, params: [] };
let details = new Map();
let overviews = new Map();

export async function loadRuns() {
  const answer = await getJson("runs");
  runsAnswer = {
    runs: answer.runs || [],
    unreadable: answer.unreadable || [],
    metrics: answer.metrics || [],
    default_metric: answer.default_metric || (answer.metrics || [])[0] || null,
    params: answer.params || [],
  };
  details = new Map();
  overviews = new Map();
  return runsAnswer;
}

export function runs() {
  return runsAnswer;
}

export function runNames() {
  return runsAnswer.runs.map((run) => run.name);
}

/** The `run` answer of one run, fetched once per reload (a failed fetch is retried next time). */
export function runDetail(name) {
  if (!details.has(name)) {
    const promise = getJson("run", { run: name });
    const cache = details;
    promise.catch(() => {
      if (cache.get(name) === promise) cache.delete(name);
    });
    cache.set(name, promise);
  }
  return details.get(name);
}

/** The `run` answers of every run (limited concurrency); failed runs are left out. */
export async function allRunDetails() {
  const results = await mapLimited(runNames(), FETCH_LIMIT, (name) => runDetail(name));
  return results.filter((r) => r.ok).map((r) => r.value);
}

/** The `overview` answer of a run for a metric, cached per reload. */
export function overview(name, metric) {
  const key = JSON.stringify([name, metric]);
  if (!overviews.has(key)) {
    const promise = getJson("overview", { run: name, metric });
    const cache = overviews;
    promise.catch(() => {
      if (cache.get(key) === promise) cache.delete(key);
    });
    cache.set(key, promise);
  }
  return overviews.get(key);
}
