// Colours of points: a categorical palette, and a continuous ramp for priority.

// distinct hues in a fixed order, the most frequent category first
const PALETTE = [
  "#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948",
  "#b07aa1", "#ff9da7", "#9c755f", "#17becf", "#bcbd22", "#7f7f7f",
];
export const NONE = "#c3c8d1";
// light gold to dark plum: the higher the priority, the darker and the more it stands out
// on the light map, and every step is clearly apart from the grey of unscored points
const RAMP = ["#f7c873", "#f29b52", "#e4572e", "#a4133c", "#4a0e4e"];
export const RAMP_CSS = `linear-gradient(to right, ${RAMP.join(", ")})`;
export const BACKGROUND = "#fbfbfc";

export function rgb(hex) {
  const value = parseInt(hex.slice(1), 16);
  return [(value >> 16) & 255, (value >> 8) & 255, value & 255];
}

/** A colour as one little-endian RGBA pixel of an ImageData. */
export function pack([r, g, b]) {
  return ((255 << 24) | (b << 16) | (g << 8) | r) >>> 0;
}

export function mix(a, b, t) {
  return [0, 1, 2].map((i) => Math.round(a[i] + (b[i] - a[i]) * t));
}

export function categoryColour(rank) {
  if (rank < PALETTE.length) return PALETTE[rank];
  // beyond the palette: hues a golden angle apart, lighter, so they read as "the rest"
  const hue = (rank * 137.508) % 360;
  return `hsl(${hue.toFixed(0)}, 45%, 62%)`;
}

/** ``[r, g, b]`` for any CSS colour this module makes. */
export function toRgb(colour) {
  if (colour.startsWith("#")) return rgb(colour);
  const [h, s, l] = colour.match(/[\d.]+/g).map(Number);
  const sat = s / 100;
  const light = l / 100;
  const a = sat * Math.min(light, 1 - light);
  const f = (n) => {
    const k = (n + h / 30) % 12;
    return Math.round(255 * (light - a * Math.max(-1, Math.min(k - 3, 9 - k, 1))));
  };
  return [f(0), f(8), f(4)];
}

const rampRgb = RAMP.map(rgb);

/** The ramp's colour at ``t`` in [0, 1]. */
export function rampColour(t) {
  const clamped = Math.min(1, Math.max(0, t));
  const at = clamped * (rampRgb.length - 1);
  const i = Math.min(rampRgb.length - 2, Math.floor(at));
  return mix(rampRgb[i], rampRgb[i + 1], at - i);
}
