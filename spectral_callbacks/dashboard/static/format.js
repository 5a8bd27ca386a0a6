// Number formatting and cleaning of the backend's numbers.

/** A finite number or null: the backend sends NaN/inf as null (or as "NaN"/"Infinity" strings). */
export function num(value) {
  return typeof value === "number" && Number.isFinite(value) ? value : null;
}

/**
 * Four significant digits in the style of C's and Python's "%.4g" (so 2.5, 12.35, 0.0001234,
 * 1.235e+04), integers below 10^7 as they are, null/NaN as a dash.
 */
export function fmt(value, digits = 4) {
  if (value === null || value === undefined) return "—";
  if (typeof value !== "number") return String(value);
  if (!Number.isFinite(value)) return "—";
  if (Number.isInteger(value) && Math.abs(value) < 1e7) return String(value);
  const [mantissa, exponentText] = value.toExponential(digits - 1).split("e");
  const exponent = Number(exponentText);
  if (exponent < -4 || exponent >= digits) {
    const sign = exponent < 0 ? "-" : "+";
    return `${trimZeros(mantissa)}e${sign}${String(Math.abs(exponent)).padStart(2, "0")}`;
  }
  return trimZeros(value.toFixed(Math.max(0, digits - 1 - exponent)));
}

function trimZeros(text) {
  return text.includes(".") ? text.replace(/\.?0+$/, "") : text;
}

/** "epoch 3, step 120" from a snapshot record. */
export function snapshotText(snapshot) {
  if (!snapshot) return "";
  return `epoch ${fmt(snapshot.epoch)}, step ${fmt(snapshot.step)}`;
}
