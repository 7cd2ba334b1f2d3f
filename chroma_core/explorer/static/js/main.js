// The explorer page: a space's map, the details of a point, the top priorities and the
// retraining triggers. Every value shown comes from the server and goes into the page as
// text, never as markup.

import { ApiError, adoptTokenFromUrl, api, fetchMap, hasToken, imageSource, setToken } from "./api.js";
import {
  BACKGROUND,
  NONE,
  RAMP_CSS,
  categoryColour,
  mix,
  pack,
  rampColour,
  rgb,
  toRgb,
} from "./colours.js";
import { PointMap } from "./map.js";

const $ = (id) => document.getElementById(id);
const count = new Intl.NumberFormat("en");
const FIELDS = ["dataset", "context", "label", "inference"];
const FILTERS = ["dataset", "context", "label"];
const LEGEND_ROWS = 12;
const NEIGHBORS = 10;
// a filter list longer than this (labels that are nearly unique) offers its most common values
const FILTER_VALUES = 500;

const state = {
  spaces: [],
  space: null,
  maps: [],
  files: false,
  data: null,
  index: new Map(),
  shuffled: null,
  selection: null,
  selected: 0,
  current: null,
  tip: -1,
  // rows in the top-priorities table: what a trigger without a selection takes
  listed: 0,
  // the trigger whose inputs are shown
  trigger: null,
};

// the colours of "model right / wrong"
const RIGHT = "#2e9e5b";
const WRONG = "#d64545";

const map = new PointMap($("map"), { onHover: hover, onClick: clickPoint, onSelect: select });
// for scripts driving the page (and tests): the state and the map
window.chromaExplorer = { state, map };

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "class") node.className = value;
    else if (key === "onclick") node.addEventListener("click", value);
    else if (key.includes("-")) node.setAttribute(key, value);
    else node[key] = value;
  }
  for (const child of children) node.append(child instanceof Node ? child : String(child ?? ""));
  return node;
}

function setStatus(text, kind = "") {
  const status = $("status");
  status.textContent = text;
  status.className = `status ${kind}`;
}

function showMessage(text) {
  const message = $("map-message");
  message.hidden = !text;
  message.textContent = text || "";
}

function fail(error) {
  if (error instanceof ApiError && error.status === 401) {
    const wrong = hasToken();
    $("token-title").textContent = wrong
      ? "This server does not accept that token"
      : "This server wants a token";
    $("token-dialog").hidden = false;
    $("token-input").focus();
    setStatus(wrong ? "The token given is not accepted: give another." : "This server wants a token.", "error");
    return;
  }
  setStatus(error.message || String(error), "error");
  document.body.dataset.state = "error";
}

// ids made by the server share a prefix per batch: keep both ends
const shortId = (id) => (id.length > 16 ? `${id.slice(0, 7)}…${id.slice(-7)}` : id);
const fixed = (value, digits = 3) => (value == null || Number.isNaN(value) ? "–" : value.toFixed(digits));
const percent = (value) => `${(100 * value).toFixed(1)}%`;

// --- loading --------------------------------------------------------------
async function loadOverview() {
  const [overview, spaces] = await Promise.all([api.overview(), api.spaces()]);
  state.maps = overview.maps;
  state.files = overview.files;
  state.spaces = spaces;
  const algorithms = $("map-algorithm");
  algorithms.replaceChildren(
    ...state.maps.map((m) => el("option", { value: m.name, title: m.description }, m.name)),
  );
  const select = $("space");
  select.replaceChildren(
    ...spaces.map((s) => el("option", { value: s.name }, `${s.name} (${count.format(s.count)})`)),
  );
  if (!spaces.length) {
    $("legend").hidden = true;
    showMessage("No space yet: add embeddings with the client, then reload this page.");
    document.body.dataset.state = "ready";
    return;
  }
  if (!state.maps.length) {
    showMessage("No map algorithm is installed: install the chroma-algo-projection plugin.");
    document.body.dataset.state = "ready";
    return;
  }
  const wanted = new URLSearchParams(window.location.hash.slice(1)).get("space");
  const chosen =
    spaces.find((s) => s.name === wanted) || spaces.find((s) => s.count > 0) || spaces[0];
  select.value = chosen.name;
  await loadSpace(chosen.name);
}

async function loadSpace(name) {
  if (state.space !== name) {
    state.trigger = null;
    $("trigger-items").hidden = true;
  }
  state.space = name;
  window.history.replaceState(null, "", `#space=${encodeURIComponent(name)}`);
  document.body.dataset.state = "loading";
  setStatus("Computing the map…");
  showMessage(null);
  const data = await fetchMap(name, $("map-algorithm").value);
  if (state.space !== name) return;
  state.data = data;
  state.index = new Map(data.ids.map((id, i) => [id, i]));
  state.shuffled = shuffled(data.n);
  state.selection = new Uint8Array(data.n);
  state.selected = 0;
  map.setData(data.x, data.y);
  applyColours();
  fillFilters();
  describeMap();
  clearDetails();
  updateSelection();
  if (!data.n) showMessage("This space holds no embeddings yet.");
  await Promise.all([loadPriorities(), loadTriggers(), loadRules()]);
  setStatus("");
  document.body.dataset.state = "ready";
}

function describeMap() {
  const { n, meta } = state.data;
  const parts = [`${count.format(n)} points`];
  if (meta.rows > n) parts[0] += ` (a sample of ${count.format(meta.rows)})`;
  const ratio = meta.explained_variance_ratio;
  if (ratio) parts.push(`${(meta.method || "").toUpperCase()} axes: ${percent(ratio[0])} + ${percent(ratio[1])} of variance`);
  else if (meta.method === "umap") parts.push(`UMAP, ${meta.n_neighbors} neighbours: near points were near in the space`);
  $("map-summary").textContent = parts.join(" · ");
}

function shuffled(n) {
  // a fixed shuffle, so no category is always drawn over the others
  const order = new Uint32Array(n);
  for (let i = 0; i < n; i++) order[i] = i;
  let seed = 2463534242;
  for (let i = n - 1; i > 0; i--) {
    seed ^= seed << 13;
    seed ^= seed >>> 17;
    seed ^= seed << 5;
    const j = (seed >>> 0) % (i + 1);
    [order[i], order[j]] = [order[j], order[i]];
  }
  return order;
}

// --- colours and legend ---------------------------------------------------
function applyColours() {
  const data = state.data;
  if (!data) return;
  const field = $("colour-by").value;
  const n = data.n;
  const colours = new Uint32Array(n);
  const faded = new Uint32Array(n);
  const background = rgb(BACKGROUND);
  const paint = (i, colour) => {
    colours[i] = pack(colour);
    faded[i] = pack(mix(colour, background, 0.82));
  };
  let order = state.shuffled;
  const legend = $("legend");
  if (field === "priority") {
    const { min, max, scored } = data.scores;
    const span = max - min || 1;
    const none = rgb(NONE);
    for (let i = 0; i < n; i++) {
      const p = data.priority[i];
      paint(i, Number.isNaN(p) ? none : rampColour((p - min) / span));
    }
    // unscored first, then by priority, so the highest are drawn on top
    const key = (i) => (Number.isNaN(data.priority[i]) ? -Infinity : data.priority[i]);
    order = Uint32Array.from(state.shuffled).sort((a, b) => key(a) - key(b));
    legend.replaceChildren(
      el("h4", {}, "priority"),
      ...(scored
        ? [
            el("div", { class: "ramp", style: `background: ${RAMP_CSS}` }),
            el("div", { class: "ends" }, el("span", {}, fixed(min)), el("span", {}, fixed(max))),
          ]
        : []),
      legendRow(NONE, "unscored", n - scored),
    );
  } else if (field === "model") {
    const label = data.codes.label;
    const inference = data.codes.inference;
    const labels = data.categories.label;
    const inferences = data.categories.inference;
    const verdict = new Int8Array(n); // -1 unknown, 0 right, 1 wrong
    const sizes = [0, 0, 0];
    const right = rgb(RIGHT);
    const wrong = rgb(WRONG);
    const none = rgb(NONE);
    for (let i = 0; i < n; i++) {
      const known = label[i] >= 0 && inference[i] >= 0;
      verdict[i] = known ? (labels[label[i]] === inferences[inference[i]] ? 0 : 1) : -1;
      sizes[verdict[i] + 1]++;
      paint(i, verdict[i] < 0 ? none : verdict[i] ? wrong : right);
    }
    // unknown under right under wrong: the mistakes stay in sight
    order = Uint32Array.from(state.shuffled).sort((a, b) => verdict[a] - verdict[b]);
    legend.replaceChildren(
      el("h4", {}, "model"),
      legendRow(WRONG, "wrong (label ≠ inference)", sizes[2]),
      legendRow(RIGHT, "right", sizes[1]),
      legendRow(NONE, "unknown (no label or no inference)", sizes[0]),
    );
  } else {
    const codes = data.codes[field];
    const values = data.categories[field];
    const sizes = new Array(values.length).fill(0);
    let missing = 0;
    for (let i = 0; i < n; i++) {
      if (codes[i] < 0) missing++;
      else sizes[codes[i]]++;
    }
    const ranked = values.map((_, code) => code).sort((a, b) => sizes[b] - sizes[a]);
    const colourOf = new Array(values.length);
    ranked.forEach((code, rank) => {
      colourOf[code] = categoryColour(rank);
    });
    const rgbOf = colourOf.map(toRgb);
    const none = rgb(NONE);
    for (let i = 0; i < n; i++) paint(i, codes[i] < 0 ? none : rgbOf[codes[i]]);
    const rows = ranked.slice(0, LEGEND_ROWS).map((code) => legendRow(colourOf[code], values[code], sizes[code]));
    if (ranked.length > LEGEND_ROWS) {
      const rest = ranked.slice(LEGEND_ROWS);
      const points = rest.reduce((total, code) => total + sizes[code], 0);
      rows.push(el("div", { class: "row muted" }, `+ ${rest.length} more (${count.format(points)} points)`));
    }
    if (missing) rows.push(legendRow(NONE, "(none)", missing));
    legend.replaceChildren(el("h4", {}, field), ...rows);
    // points without a value first, so those with one are drawn over them
    if (missing) order = Uint32Array.from(state.shuffled).sort((a, b) => (codes[b] < 0) - (codes[a] < 0));
  }
  legend.hidden = n === 0;
  map.setColours(colours, faded, order);
}

function legendRow(colour, name, size) {
  return el(
    "div",
    { class: "row", title: name },
    el("span", { class: "swatch", style: `background: ${colour}` }),
    el("span", { class: "name" }, name),
    el("span", { class: "count" }, count.format(size)),
  );
}

// --- hover ----------------------------------------------------------------
function hover(i, px, py) {
  const tip = $("tooltip");
  if (i < 0 || !state.data) {
    tip.hidden = true;
    state.tip = -1;
    return;
  }
  const data = state.data;
  if (state.tip !== i) {
    state.tip = i;
    const uri = data.input_uris[i];
    const rows = [["id", data.ids[i]]];
    for (const field of FIELDS) {
      const code = data.codes[field][i];
      if (code >= 0) rows.push([field, data.categories[field][code]]);
    }
    const p = data.priority[i];
    rows.push(["priority", Number.isNaN(p) ? "unscored" : fixed(p)]);
    tip.replaceChildren(
      ...(uri ? [el("div", { class: "uri" }, uri)] : []),
      el("table", {}, ...rows.map(([k, v]) => el("tr", {}, el("td", {}, k), el("td", {}, v)))),
    );
    imageSource(uri, state.files).then((src) => {
      // an image that does not load (a URL out of reach) leaves no broken icon behind
      if (src && state.tip === i) tip.prepend(el("img", { src, alt: "", onerror: (e) => e.target.remove() }));
    });
  }
  tip.hidden = false;
  const { width, height } = $("map").getBoundingClientRect();
  const left = px + 16 + tip.offsetWidth > width ? px - 16 - tip.offsetWidth : px + 16;
  const top = py + 16 + tip.offsetHeight > height ? py - 16 - tip.offsetHeight : py + 16;
  tip.style.left = `${Math.max(4, left)}px`;
  tip.style.top = `${Math.max(4, top)}px`;
}

// --- details --------------------------------------------------------------
function clearDetails() {
  state.current = null;
  $("details-empty").hidden = false;
  $("details-body").hidden = true;
  map.setFocus(-1);
}

function clickPoint(i) {
  if (i >= 0) showDetails(state.data.ids[i]);
}

async function showDetails(id) {
  const space = state.space;
  state.current = id;
  const at = state.index.get(id) ?? -1;
  map.setFocus(at);
  for (const row of $("priority-table").tBodies[0].rows) row.classList.toggle("current", row.dataset.id === id);
  $("details-empty").hidden = true;
  $("details-body").hidden = false;
  $("details-image").hidden = true;
  try {
    const [rows, scored] = await Promise.all([
      api.get(space, [id]),
      api.priorities(space, 1, { id }),
    ]);
    let neighbors = await api.neighbors(space, id, NEIGHBORS, { context: "training" });
    let title = "Nearest training inputs";
    if (!neighbors.length) {
      neighbors = await api.neighbors(space, id, NEIGHBORS, null);
      title = "Nearest inputs";
    }
    if (state.current !== id || state.space !== space) return;
    renderDetails(rows[0], scored[0], neighbors, title);
  } catch (error) {
    fail(error);
  }
}

function renderDetails(row, scored, neighbors, title) {
  const fields = [["id", row.id], ["input_uri", row.input_uri]];
  for (const field of FIELDS) fields.push([field, row[field]]);
  if (row.metadata && row.metadata !== "{}") fields.push(["metadata", row.metadata]);
  $("details-fields").replaceChildren(
    ...fields.flatMap(([k, v]) => [
      el("dt", {}, k),
      el("dd", { class: k === "id" || k === "input_uri" ? "mono" : "" }, v ?? "–"),
    ]),
  );
  const priority = $("details-priority");
  if (scored) {
    const components = JSON.parse(scored.components || "{}");
    const parts = Object.entries(components).filter(([k, v]) => typeof v === "number");
    priority.replaceChildren(
      el("div", { class: "score" }, el("span", { class: "value" }, fixed(scored.priority)), bar(scored.priority)),
      el("dl", { class: "components" }, ...parts.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, fixed(v))])),
    );
  } else {
    priority.replaceChildren(
      el("p", { class: "muted" }, row.context === "training" ? "Training inputs are not scored." : "Not scored yet: run compute_priorities."),
    );
  }
  $("neighbors-title").textContent = title;
  const votes = new Map();
  for (const n of neighbors) if (n.label != null) votes.set(n.label, (votes.get(n.label) || 0) + 1);
  const ranked = [...votes.entries()].sort((a, b) => b[1] - a[1]);
  $("details-votes").textContent = ranked.length
    ? `Labels: ${ranked.map(([label, n]) => `${label} ${n}`).join(" · ")}`
    : "";
  $("neighbors").tBodies[0].replaceChildren(
    ...neighbors.map((n) =>
      el(
        "tr",
        { title: n.id, onclick: () => showDetails(n.id) },
        el("td", { class: "num" }, n.rank + 1),
        el("td", { class: "mono" }, shortId(n.id)),
        el("td", {}, n.label ?? "–"),
        el("td", { class: "num" }, fixed(n.distance)),
      ),
    ),
  );
  const at = state.index.get(row.id) ?? -1;
  map.setFocus(at, neighbors.map((n) => state.index.get(n.id)).filter((i) => i !== undefined));
  imageSource(row.input_uri, state.files).then((src) => {
    const image = $("details-image");
    if (src && state.current === row.id) {
      image.src = src;
      image.hidden = false;
    }
  });
}

function bar(value) {
  const fill = el("div", { class: "fill" });
  fill.style.width = `${Math.round(100 * Math.min(1, Math.max(0, value || 0)))}%`;
  return el("div", { class: "track" }, fill);
}

// --- priorities -------------------------------------------------------------
function fillFilters() {
  for (const field of FILTERS) {
    const select = $(`filter-${field}`);
    const values = common(field).sort();
    select.replaceChildren(el("option", { value: "" }, "all"), ...values.map((v) => el("option", { value: v }, v)));
  }
}

function common(field) {
  const { categories, codes } = state.data;
  const values = categories[field];
  if (values.length <= FILTER_VALUES) return [...values];
  const sizes = new Array(values.length).fill(0);
  for (const code of codes[field]) if (code >= 0) sizes[code]++;
  const ranked = values.map((_, code) => code).sort((a, b) => sizes[b] - sizes[a]);
  return ranked.slice(0, FILTER_VALUES).map((code) => values[code]);
}

function filterWhere() {
  const parts = FILTERS.map((field) => [field, $(`filter-${field}`).value])
    .filter(([, value]) => value)
    .map(([field, value]) => ({ [field]: value }));
  if (!parts.length) return null;
  return parts.length === 1 ? parts[0] : { $and: parts };
}

function topN() {
  const value = Number.parseInt($("top-n").value, 10);
  return Number.isFinite(value) && value > 0 ? Math.min(value, 1000) : 50;
}

async function loadPriorities() {
  const space = state.space;
  const rows = await api.priorities(space, topN(), filterWhere());
  if (state.space !== space) return;
  const body = $("priority-table").tBodies[0];
  body.replaceChildren(
    ...rows.map((row, rank) => {
      const tr = el(
        "tr",
        { onclick: () => showDetails(row.id), title: row.input_uri || row.id },
        el("td", { class: "num" }, rank + 1),
        el("td", { class: "mono" }, shortId(row.id)),
        el("td", {}, row.dataset ?? "–"),
        el("td", {}, row.context ?? "–"),
        el("td", {}, row.label ?? "–"),
        el("td", {}, row.inference ?? "–"),
        el("td", {}, el("div", { class: "bar-cell" }, bar(row.priority), fixed(row.priority))),
      );
      tr.dataset.id = row.id;
      if (row.id === state.current) tr.classList.add("current");
      return tr;
    }),
  );
  state.listed = rows.length;
  const empty = $("priority-empty");
  empty.hidden = rows.length > 0;
  empty.textContent = filterWhere()
    ? "No scored input matches these filters."
    : "No input is scored yet: Compute priorities scores them.";
  updateSelection();
}

// --- selection and triggers ------------------------------------------------
function select(indices, additive) {
  if (!state.data) return;
  if (!additive) state.selection.fill(0);
  for (const i of indices) state.selection[i] = 1;
  state.selected = state.selection.reduce((total, v) => total + v, 0);
  map.setSelection(state.selected ? state.selection : null);
  updateSelection();
}

function selectedIds() {
  const ids = [];
  state.selection.forEach((v, i) => {
    if (v) ids.push(state.data.ids[i]);
  });
  return ids;
}

function updateSelection() {
  const summary = $("selection-summary");
  const button = $("trigger-button");
  $("clear-selection").disabled = !state.selected;
  if (state.selected) {
    let scored = 0;
    state.selection.forEach((v, i) => {
      if (v && !Number.isNaN(state.data.priority[i])) scored++;
    });
    summary.textContent = `${count.format(state.selected)} points selected on the map, ${count.format(scored)} of them scored.`;
    button.textContent = "Trigger retraining for the selection";
    button.disabled = scored === 0;
    button.title = scored ? "" : "None of the selected points is scored: compute priorities first.";
  } else {
    summary.textContent = `No points selected (shift-drag on the map): a trigger takes the top ${topN()} of the table.`;
    button.textContent = `Trigger retraining for the top ${topN()}`;
    button.disabled = state.listed === 0;
    button.title = state.listed ? "" : "No scored input to take: compute priorities first.";
  }
}

async function trigger() {
  const note = $("trigger-note").value.trim() || null;
  const params = state.selected
    ? { n: state.selected, where: { id: { $in: selectedIds() } }, note }
    : { n: topN(), where: filterWhere(), note };
  const button = $("trigger-button");
  button.disabled = true;
  try {
    const made = await api.trigger(state.space, params);
    setStatus(`Trigger #${made.id} holds ${count.format(made.count)} inputs.`, "ok");
    $("trigger-note").value = "";
    await loadTriggers();
  } catch (error) {
    fail(error);
  } finally {
    updateSelection();
  }
}

const STATUSES = ["pending", "acknowledged", "done", "failed"];

async function changeStatus(id, status) {
  const moved = await api.setTriggerStatus(id, status);
  setStatus(`Trigger #${moved.id} is ${moved.status}.`, "ok");
  await loadTriggers();
}

async function computePriorities() {
  const space = state.space;
  const button = $("compute-button");
  button.disabled = true;
  try {
    await api.computePriorities(space);
    let job = {};
    const started = performance.now();
    for (;;) {
      job = (await api.priorityStatus(space)).job || {};
      const seconds = ((performance.now() - started) / 1000).toFixed(0);
      const counts = job.rows ? ` (${count.format(job.rows)} inputs)` : "";
      setStatus(`Computing priorities: ${job.phase || "starting"}${counts}, ${seconds} s`);
      if (job.state !== "running") break;
      await new Promise((resolve) => setTimeout(resolve, 400));
    }
    if (job.state === "failed") throw new Error(`Computing priorities failed: ${job.error}`);
    const scored = job.summary ? job.summary.scored : 0;
    if (state.space === space) await loadSpace(space);
    setStatus(`Priorities computed: ${count.format(scored)} inputs scored.`, "ok");
  } finally {
    button.disabled = false;
  }
}

async function loadTriggers() {
  const space = state.space;
  const triggers = await api.triggers(space);
  if (state.space !== space) return;
  $("trigger-table").tBodies[0].replaceChildren(
    ...triggers.map((t) =>
      el(
        "tr",
        {
          title: `${t.selection.strategy || ""}, n = ${t.selection.n ?? "all"}: click for its inputs`,
          onclick: (event) => {
            if (event.target.tagName !== "SELECT") showItems(t).catch(fail);
          },
          "data-id": t.id,
          class: t.id === state.trigger ? "current" : "",
        },
        el("td", { class: "num" }, t.id),
        el("td", {}, new Date(t.created_at).toLocaleString([], { dateStyle: "short", timeStyle: "short" })),
        el("td", { class: "num" }, `${count.format(t.labelled ?? 0)}/${count.format(t.count)}`),
        el("td", {}, statusChoice(t)),
        el("td", { class: "note" }, t.note ?? ""),
      ),
    ),
  );
  $("trigger-empty").hidden = triggers.length > 0;
}

async function showItems(trigger) {
  state.trigger = trigger.id;
  const items = await api.triggerItems(trigger.id);
  for (const row of $("trigger-table").tBodies[0].rows) {
    row.classList.toggle("current", Number(row.dataset.id) === trigger.id);
  }
  const done = items.filter((item) => item.labelled).length;
  $("items-title").textContent = `Trigger #${trigger.id}: ${count.format(done)} of ${count.format(items.length)} inputs labelled`;
  $("items-table").tBodies[0].replaceChildren(
    ...items.map((item) => {
      const input = el("input", { type: "text", value: item.label_now ?? "", placeholder: item.inference ?? "label" });
      input.dataset.id = item.id;
      input.dataset.before = item.label_now ?? "";
      return el(
        "tr",
        { title: item.input_uri || item.id },
        el("td", { class: "mono" }, shortId(item.id)),
        el("td", {}, item.inference ?? "–"),
        el("td", {}, input),
        el("td", {}, item.labelled ? "✓" : ""),
      );
    }),
  );
  $("trigger-items").hidden = false;
}

async function saveLabels() {
  const training = $("items-into-training").checked;
  const rows = [];
  for (const input of $("items-table").querySelectorAll("input")) {
    const label = input.value.trim();
    if (label && label !== input.dataset.before) {
      rows.push(training ? { id: input.dataset.id, label, context: "training" } : { id: input.dataset.id, label });
    }
  }
  if (!rows.length) {
    setStatus("No label changed.");
    return;
  }
  await api.update(state.space, rows);
  setStatus(`${count.format(rows.length)} labels saved${training ? ", moved into training" : ""}.`, "ok");
  const id = state.trigger;
  await loadTriggers();
  const trigger = (await api.triggers(state.space)).find((t) => t.id === id);
  if (trigger) await showItems(trigger);
}

function statusChoice(trigger) {
  const choice = el(
    "select",
    { class: `pill ${trigger.status}`, "aria-label": `status of trigger ${trigger.id}` },
    ...STATUSES.map((s) => el("option", { value: s }, s)),
  );
  choice.value = trigger.status;
  choice.addEventListener("change", () => changeStatus(trigger.id, choice.value).catch(fail));
  return choice;
}

// --- trigger rules ----------------------------------------------------------
const RULE_VALUE = { priority: "min priority, e.g. 0.9", schedule: "hours, e.g. 24", drift: "dataset" };

function describeRule(rule) {
  if (rule.when === "priority") return `priority ≥ ${rule.min_priority}`;
  if (rule.when === "drift") return `${rule.dataset} drifts`;
  const hours = rule.every / 3600;
  return `every ${hours >= 1 ? `${+hours.toFixed(2)} h` : `${rule.every} s`}`;
}

function showRules(rules) {
  $("rule-table").tBodies[0].replaceChildren(
    ...rules.map((rule) => {
      const remove = el("button", { type: "button", title: `remove rule ${rule.name}` }, "Remove");
      remove.addEventListener("click", guarded(() => removeRule(rule.name)));
      return el(
        "tr",
        { title: rule.last_fired_at ? `last fired ${rule.last_fired_at}` : "not fired yet" },
        el("td", {}, rule.name),
        el("td", {}, describeRule(rule)),
        el("td", { class: "num" }, count.format(rule.n)),
        el("td", { class: "num" }, count.format(rule.fired)),
        el("td", {}, rule.last_error ?? ""),
        el("td", {}, remove),
      );
    }),
  );
  $("rule-empty").hidden = rules.length > 0;
}

async function loadRules() {
  const space = state.space;
  const rules = await api.rules(space);
  if (state.space === space) showRules(rules);
}

async function addRule(event) {
  event.preventDefault();
  const when = $("rule-when").value;
  const value = $("rule-value").value.trim();
  const params = { action: "add", name: $("rule-name").value.trim(), when, n: Number($("rule-n").value) };
  if (when === "priority") params.min_priority = Number(value);
  else if (when === "schedule") params.every = Number(value) * 3600;
  else params.dataset = value;
  const button = $("rule-button");
  button.disabled = true;
  try {
    showRules(await api.rules(state.space, params));
    setStatus(`Rule ${params.name} added: it fires by itself as data arrives.`, "ok");
    $("rule-name").value = "";
  } catch (error) {
    fail(error);
  } finally {
    button.disabled = false;
  }
}

async function removeRule(name) {
  showRules(await api.rules(state.space, { action: "remove", name }));
  setStatus(`Rule ${name} removed; its triggers stay.`, "ok");
}

// --- controls ---------------------------------------------------------------
function guarded(work) {
  return (...args) => work(...args).catch(fail);
}

function bind() {
  $("space").addEventListener("change", guarded(() => loadSpace($("space").value)));
  $("map-algorithm").addEventListener("change", guarded(() => loadSpace(state.space)));
  $("colour-by").addEventListener("change", applyColours);
  for (const field of FILTERS) $(`filter-${field}`).addEventListener("change", guarded(loadPriorities));
  $("top-n").addEventListener("change", guarded(loadPriorities));
  $("zoom-in").addEventListener("click", () => map.zoom(1.5));
  $("zoom-out").addEventListener("click", () => map.zoom(1 / 1.5));
  $("zoom-fit").addEventListener("click", () => map.fit());
  $("trigger-button").addEventListener("click", trigger);
  $("compute-button").addEventListener("click", guarded(computePriorities));
  $("items-save").addEventListener("click", guarded(saveLabels));
  $("items-close").addEventListener("click", () => {
    $("trigger-items").hidden = true;
    state.trigger = null;
  });
  $("rule-form").addEventListener("submit", guarded(addRule));
  $("rule-when").addEventListener("change", () => {
    $("rule-value").placeholder = RULE_VALUE[$("rule-when").value];
  });
  $("clear-selection").addEventListener("click", () => select([], false));
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape") select([], false);
  });
  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    setToken($("token-input").value.trim());
    $("token-dialog").hidden = true;
    setStatus("");
    loadOverview().catch(fail);
  });
}

adoptTokenFromUrl();
bind();
$("details-image").addEventListener("error", (event) => {
  event.target.hidden = true;
});
loadOverview().catch(fail);
