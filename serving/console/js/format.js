// Numbers as people read them: percentages, currency, fixed decimals; "—" for what is missing.

const DASH = "—";
const missing = (x) => x === null || x === undefined || (typeof x === "number" && !Number.isFinite(x));

export function pct(x, digits = 1) {
  return missing(x) ? DASH : `${(x * 100).toFixed(digits)}%`;
}

/** A signed percentage (+1.2%), for changes and returns. */
export function signedPct(x, digits = 1) {
  return missing(x) ? DASH : `${x > 0 ? "+" : ""}${(x * 100).toFixed(digits)}%`;
}

const money = new Intl.NumberFormat("en-US", { style: "currency", currency: "USD", maximumFractionDigits: 0 });
export function currency(x) {
  return missing(x) ? DASH : money.format(x);
}

export function num(x, digits = 2) {
  return missing(x) ? DASH : Number(x).toFixed(digits);
}

export function int(x) {
  return missing(x) ? DASH : Math.round(x).toLocaleString("en-US");
}

/** An ISO timestamp (or epoch ms) as "2024-05-01 14:03 UTC". */
export function when(x) {
  if (missing(x) || x === "") return DASH;
  const d = typeof x === "number" ? new Date(x) : new Date(x);
  if (Number.isNaN(d.getTime())) return String(x);
  return `${d.toISOString().slice(0, 16).replace("T", " ")} UTC`;
}

/** A metric value whose name says how to read it (rank IC, returns, ratios). */
export function metric(name, x) {
  if (typeof x !== "number") return missing(x) ? DASH : String(x);
  if (/rank_ic|ic@|_ic\b|ic_/i.test(name)) return num(x, 4);
  if (/return|volatility|drawdown|turnover|hit|var|cvar/i.test(name)) return pct(x, 2);
  if (Number.isInteger(x)) return int(x);
  return num(x, 3);
}
