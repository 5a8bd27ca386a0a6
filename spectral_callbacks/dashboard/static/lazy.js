// Loading on approach: calls a loader for the elements that come near the viewport, a limited
// number at a time, nearest first, so a page of many runs asks only for what the reader reaches.

/** Distance in pixels from an element to the viewport (0 when it is in view). */
function distanceToView(element) {
  const rect = element.getBoundingClientRect();
  const height = window.innerHeight || document.documentElement.clientHeight;
  if (rect.bottom < 0) return -rect.bottom;
  if (rect.top > height) return rect.top - height;
  return 0;
}

/**
 * Watches elements (each under a key) and calls `load(key)` once per generation for each one
 * that is within `margin` of the viewport (a CSS margin, e.g. "100% 0px": one screen above and
 * below), with at most `limit` loads running at once. `invalidate()` starts a new generation:
 * the elements near the viewport load again at once, the others when they come near.
 * Elements that are hidden (display: none) are never near, so they wait until shown.
 */
export function createLazyLoader({ limit, margin, load }) {
  const elements = new Map(); // key -> element
  const keys = new Map(); // element -> key
  const near = new Set(); // keys whose element is near the viewport
  const started = new Set(); // keys loaded (or loading) in this generation
  let running = 0;
  let runningInView = 0;

  /** The nearest element not loaded yet, as [key, distance]; null when there is none. */
  function nearest() {
    let best = null;
    for (const key of near) {
      if (started.has(key) || !elements.has(key)) continue;
      const distance = distanceToView(elements.get(key));
      if (best === null || distance < best[1]) best = [key, distance];
    }
    return best;
  }

  // Elements in view load first: one out of view waits while any in view is loading, so the
  // first screen is not slowed down by the loads ahead of the reader.
  function pump() {
    while (running < limit) {
      const candidate = nearest();
      if (candidate === null) return;
      const [key, distance] = candidate;
      const inView = distance === 0;
      if (!inView && runningInView > 0) return;
      started.add(key);
      running += 1;
      if (inView) runningInView += 1;
      Promise.resolve()
        .then(() => load(key))
        .catch(() => {})
        .finally(() => {
          running -= 1;
          if (inView) runningInView -= 1;
          pump();
        });
    }
  }

  const observer = new IntersectionObserver(
    (entries) => {
      for (const entry of entries) {
        const key = keys.get(entry.target);
        if (key === undefined) continue;
        if (entry.isIntersecting) near.add(key);
        else near.delete(key);
      }
      pump();
    },
    { root: document, rootMargin: margin },
  );

  return {
    /** Watches `element` under `key` (replacing the element watched under that key before). */
    observe(key, element) {
      const previous = elements.get(key);
      if (previous === element) return;
      if (previous) this.forget(key);
      elements.set(key, element);
      keys.set(element, key);
      observer.observe(element);
    },
    /** Stops watching the element of `key`. */
    forget(key) {
      const element = elements.get(key);
      if (!element) return;
      observer.unobserve(element);
      elements.delete(key);
      keys.delete(element);
      near.delete(key);
      started.delete(key);
    },
    /** A new generation: every element is to be loaded again when near the viewport. */
    invalidate() {
      started.clear();
      pump();
    },
    /** Whether `key` was loaded (or is loading) in this generation. */
    isStarted(key) {
      return started.has(key);
    },
  };
}
