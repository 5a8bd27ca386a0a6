// Colors: a computed viridis-like sequential scale, and categorical colors for phases and runs.
// Both are built in the OKLCH space (Ottosson, 2020) so that lightness changes evenly.

function oklchToRgb(lightness, chroma, hueDegrees) {
  const hue = (hueDegrees * Math.PI) / 180;
  const a = chroma * Math.cos(hue);
  const b = chroma * Math.sin(hue);
  const l = (lightness + 0.3963377774 * a + 0.2158037573 * b) ** 3;
  const m = (lightness - 0.1055613458 * a - 0.0638541728 * b) ** 3;
  const s = (lightness - 0.0894841775 * a - 1.291485548 * b) ** 3;
  const linear = [
    4.0767416621 * l - 3.3077115913 * m + 0.2309699292 * s,
    -1.2684380046 * l + 2.6097574011 * m - 0.3413193965 * s,
    -0.0041960863 * l - 0.7034186147 * m + 1.707614701 * s,
  ];
  return linear.map((c) => (c <= 0.0031308 ? 12.92 * c : 1.055 * c ** (1 / 2.4) - 0.055));
}

function inGamut(rgb) {
  return rgb.every((c) => c >= -1e-4 && c <= 1 + 1e-4);
}

/** sRGB bytes of an OKLCH color, reducing chroma until it fits the sRGB gamut. */
function oklchToBytes(lightness, chroma, hue) {
  let rgb = oklchToRgb(lightness, chroma, hue);
  for (let c = chroma; !inGamut(rgb) && c > 0; c -= 0.005) rgb = oklchToRgb(lightness, c, hue);
  return rgb.map((v) => Math.round(255 * Math.min(1, Math.max(0, v))));
}

function toCss([r, g, b]) {
  return `rgb(${r}, ${g}, ${b})`;
}

// Sequential scale: dark violet -> blue -> teal -> green -> yellow, lightness rising linearly,
// chroma a quadratic Bezier (saturated ends, calmer middle), hue turning from 305 to 105 degrees.
const SEQUENTIAL_STEPS = 256;
const SEQUENTIAL = Array.from({ length: SEQUENTIAL_STEPS }, (_, i) => {
  const t = i / (SEQUENTIAL_STEPS - 1);
  const lightness = 0.27 + 0.66 * t;
  const chroma = 0.14 * (1 - t) ** 2 + 0.07 * 2 * t * (1 - t) + 0.19 * t ** 2;
  const hue = 305 - 200 * t;
  return oklchToBytes(lightness, chroma, hue);
});

/** RGB bytes for t in [0, 1] on the sequential scale. */
export function sequentialRgb(t) {
  const clamped = Math.min(1, Math.max(0, Number.isFinite(t) ? t : 0));
  return SEQUENTIAL[Math.round(clamped * (SEQUENTIAL_STEPS - 1))];
}

/** CSS color for t in [0, 1] on the sequential scale. */
export function sequential(t) {
  return toCss(sequentialRgb(t));
}

/** A CSS linear-gradient of the sequential scale, for legends. */
export function sequentialGradient(direction = "to right") {
  const stops = [];
  for (let i = 0; i <= 10; i += 1) stops.push(`${sequential(i / 10)} ${i * 10}%`);
  return `linear-gradient(${direction}, ${stops.join(", ")})`;
}

export const MISSING_RGB = [190, 190, 190];
export const MISSING_MARK_RGB = [120, 120, 120];

// Phases in the order of the library's phase rule, from random-like to collapsed; each gets a
// fixed hue so the same phase has the same color in every run.
const PHASE_HUES = {
  "random-like": 250,
  "bleeding-out": 200,
  "bulk+spikes": 150,
  "bulk-decay": 95,
  "heavy-tailed": 45,
  "rank-collapse": 0,
};

/** RGB bytes of a phase name; unknown phase names get evenly spread extra hues, "unknown" gray. */
export function phaseRgb(name, index = 0) {
  if (name === null || name === undefined || name === "unknown" || name === "") return [150, 150, 150];
  const hue = name in PHASE_HUES ? PHASE_HUES[name] : (index * 137.5 + 300) % 360;
  return oklchToBytes(0.68, 0.15, hue);
}

export function phaseColor(name, index = 0) {
  return toCss(phaseRgb(name, index));
}

/** Distinct colors for overlaid runs: the first is the primary run's. */
export function seriesColor(index) {
  if (index === 0) return toCss(oklchToBytes(0.45, 0.14, 260));
  // Hues away from the red of the fit and spikes and the green of the MP edge.
  const hues = [70, 200, 330, 105, 295, 225, 355, 45];
  return toCss(oklchToBytes(0.6, 0.16, hues[(index - 1) % hues.length]));
}

export function cssRgb(rgb) {
  return toCss(rgb);
}
