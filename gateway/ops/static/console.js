// The operator console: read-only views of orders, saga executions, traces, queues, stock and
// alarms over the gateway's /ops/api (docs/operator-console.md), plus two explicit writes (re-drive
// a dead-letter queue, re-drive a failed execution), each behind a confirm(). Everything is built
// with DOM calls and textContent: message bodies and event details are never parsed as HTML.

const API = new URL("../api/", import.meta.url);
const TOKEN_KEY = "ops-console-token";
const SVG_NS = "http://www.w3.org/2000/svg";
const PANELS = ["orders", "queues", "stock", "alarms"];

const $ = (id) => document.getElementById(id);

// -- DOM building ---------------------------------------------------------------------------

/** An element with attributes (class, dataset via data-*, listeners via on*) and children. */
function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  setAttrs(node, attrs);
  node.append(...children.flat().filter((c) => c !== null && c !== undefined && c !== false));
  return node;
}

/** An SVG element, as `h`. */
function s(tag, attrs = {}, ...children) {
  const node = document.createElementNS(SVG_NS, tag);
  setAttrs(node, attrs);
  node.append(...children.flat().filter((c) => c !== null && c !== undefined && c !== false));
  return node;
}

function setAttrs(node, attrs) {
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
}

function emptyRow(columns, text) {
  return h("tr", {}, h("td", { class: "empty", colspan: columns }, text));
}

// -- formatting -----------------------------------------------------------------------------

function money(value) {
  if (!value) return "";
  try {
    const format = new Intl.NumberFormat(undefined, { style: "currency", currency: value.currency });
    const digits = format.resolvedOptions().maximumFractionDigits;
    return format.format(value.amount / 10 ** digits);
  } catch {
    return `${value.amount} ${value.currency} (minor units)`;
  }
}

function when(iso) {
  if (!iso) return "";
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return iso;
  return date.toISOString().replace("T", " ").replace("Z", "").slice(0, 23);
}

/** The tail of an id (UUIDv7s share their leading, time-ordered digits). */
function shortId(id) {
  return id.length > 12 ? `…${id.slice(-8)}` : id;
}

function timeOnly(iso) {
  return when(iso).slice(11);
}

function age(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  if (seconds < 90) return `${seconds.toFixed(seconds < 10 ? 1 : 0)} s`;
  if (seconds < 5400) return `${(seconds / 60).toFixed(0)} min`;
  return `${(seconds / 3600).toFixed(1)} h`;
}

function ms(value) {
  return value >= 1000 ? `${(value / 1000).toFixed(2)} s` : `${value.toFixed(value < 10 ? 2 : 1)} ms`;
}

function statusPill(status) {
  const text = status || "–";
  const tone = /CONFIRM|SHIPPED|SUCCEEDED|DELIVERED|CAPTURED|OK/.test(text)
    ? "good"
    : /FAIL|CANCEL|DECLIN|ABORT|TIMED_OUT|ERROR|PARKED/.test(text)
      ? "bad"
      : /PENDING|RUNNING|RESERV|AUTHORI/.test(text)
        ? "busy"
        : "";
  return h("span", { class: `pill ${tone}` }, text);
}

function detailText(detail) {
  if (detail === null || detail === undefined) return "";
  if (typeof detail === "string") return detail;
  return JSON.stringify(detail);
}

// -- API ------------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, problem) {
    super(problem.detail || problem.title || `HTTP ${status}`);
    this.status = status;
    this.problem = problem;
  }
}

/** Call /ops/api/<path> with the admin token; a 401/403 signs out and shows the detail. */
async function api(path, { method = "GET", body } = {}) {
  const headers = { Authorization: `Bearer ${sessionStorage.getItem(TOKEN_KEY) || ""}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(new URL(path, API), {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  let parsed = {};
  try {
    parsed = text ? JSON.parse(text) : {};
  } catch {
    parsed = { detail: text.slice(0, 300) };
  }
  if (response.ok) return parsed;
  const error = new ApiError(response.status, parsed);
  if (response.status === 401 || response.status === 403) signedOut(error.message);
  throw error;
}

function showStatus(text, tone = "") {
  const banner = $("ops-status");
  banner.className = `banner ${tone}`;
  banner.textContent = text;
  banner.hidden = false;
}

/** Run an async view update; an API error goes to the status line (auth errors sign out). */
async function guarded(work) {
  try {
    return await work();
  } catch (error) {
    if (error instanceof ApiError && (error.status === 401 || error.status === 403)) return null;
    showStatus(`${error.problem?.title || "Error"}: ${error.message}`, "error");
    return null;
  }
}

// -- sign-in and tabs -----------------------------------------------------------------------

function subjectOf(token) {
  try {
    const payload = JSON.parse(atob(token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/")));
    return payload.sub || "";
  } catch {
    return "";
  }
}

function signedOut(detail) {
  sessionStorage.removeItem(TOKEN_KEY);
  for (const panel of PANELS) $(`panel-${panel}`).hidden = true;
  $("tabs").hidden = true;
  $("signed-in").hidden = true;
  $("sign-in-form").hidden = false;
  $("ops-status").hidden = true;
  const banner = $("auth-error");
  banner.textContent = detail || "";
  banner.hidden = !detail;
}

async function signIn(token) {
  sessionStorage.setItem(TOKEN_KEY, token);
  // The alarms answer proves the token (401/403 otherwise) and fills the tab's count.
  try {
    await loadAlarms();
  } catch (error) {
    if (!(error instanceof ApiError && (error.status === 401 || error.status === 403))) {
      signedOut(`Could not reach the console's API: ${error.message}`);
    }
    return;
  }
  $("auth-error").hidden = true;
  $("sign-in-form").hidden = true;
  $("signed-in").hidden = false;
  $("actor").textContent = `signed in as ${subjectOf(token) || "?"}`;
  $("tabs").hidden = false;
  route();
}

function show(panel) {
  // The last action's result belongs to the panel it was taken in.
  if ($(`panel-${panel}`).hidden) $("ops-status").hidden = true;
  for (const name of PANELS) $(`panel-${name}`).hidden = name !== panel;
  for (const tab of document.querySelectorAll(".tab")) {
    tab.classList.toggle("active", tab.dataset.panel === panel);
  }
}

/** Open the panel (and item) the location's hash names: #orders, #orders/<id>, #queues, ... */
function route() {
  if (!sessionStorage.getItem(TOKEN_KEY)) return;
  const [panel, ...rest] = location.hash.slice(1).split("/");
  const ref = decodeURIComponent(rest.join("/"));
  if (panel === "executions" && ref) {
    // An execution is shown with its order (its name is the order id), or on its own.
    show("orders");
    if (ref !== state.orderId && ref !== state.executionName) guarded(() => openExecution(ref));
    return;
  }
  const name = PANELS.includes(panel) ? panel : "orders";
  show(name);
  if (name === "orders") {
    if (ref && ref !== state.orderId) {
      $("order-search").value = ref;
      guarded(() => searchOrders(ref, { open: ref }));
    } else if (!state.ordersLoaded) guarded(() => searchOrders(""));
  } else if (name === "queues") guarded(() => loadQueues(ref));
  else if (name === "stock") {
    if (ref) $("stock-search").value = ref;
    guarded(() => loadStock($("stock-search").value.trim()));
  } else guarded(loadAlarms);
}

const state = { orderId: null, executionName: null, ordersLoaded: false, dlqOpen: null };

// -- orders ---------------------------------------------------------------------------------

async function searchOrders(q, { open } = {}) {
  const params = new URLSearchParams({ limit: "50" });
  if (q) params.set("q", q);
  const { orders } = await api(`orders?${params}`);
  state.ordersLoaded = true;
  const body = $("order-list").tBodies[0];
  body.replaceChildren(
    ...(orders.length ? orders.map(orderRow) : [emptyRow(5, q ? `No order matches ${q}` : "No orders yet")]),
  );
  $("order-count").textContent = `${orders.length} order${orders.length === 1 ? "" : "s"}`;
  const target = open && orders.find((order) => order.order_id === open);
  if (target) await openOrder(target.order_id);
  else if (orders.length === 1) await openOrder(orders[0].order_id);
}

function orderRow(order) {
  const row = h(
    "tr",
    {
      class: `order-row clickable${order.order_id === state.orderId ? " selected" : ""}`,
      "data-order-id": order.order_id,
      title: order.failure_reason ? `failure: ${order.failure_reason}` : order.order_id,
      onclick: () => guarded(() => openOrder(order.order_id)),
    },
    h("td", { class: "mono", title: when(order.created_at) }, when(order.created_at).slice(11, 19)),
    h("td", { class: "mono" }, order.order_id),
    h("td", {}, order.customer_id),
    h("td", {}, statusPill(order.status)),
    h("td", { class: "num" }, money(order.total)),
  );
  return row;
}

async function openOrder(orderId) {
  state.orderId = orderId;
  state.executionName = null;
  for (const row of document.querySelectorAll(".order-row")) {
    row.classList.toggle("selected", row.dataset.orderId === orderId);
  }
  if (location.hash !== `#orders/${orderId}`) history.replaceState(null, "", `#orders/${orderId}`);
  const detail = await api(`orders/${encodeURIComponent(orderId)}`);
  if (state.orderId !== orderId) return; // another order was opened meanwhile
  renderOrder(detail);
  $("order-detail").hidden = false;
  await Promise.all([
    guarded(() => loadExecution(detail.execution)),
    guarded(() => loadTrace(detail.trace_id)),
  ]);
}

/** The execution's order when there is one of that id, else the execution on its own. */
async function openExecution(name) {
  try {
    await openOrder(name);
    return;
  } catch (error) {
    if (!(error instanceof ApiError && (error.status === 404 || error.status === 400))) throw error;
  }
  state.orderId = null;
  state.executionName = name;
  for (const row of document.querySelectorAll(".order-row")) row.classList.remove("selected");
  if (location.hash !== `#executions/${name}`) history.replaceState(null, "", `#executions/${name}`);
  $("order-title").textContent = `execution ${name}`;
  $("order-facts").replaceChildren(h("dt", {}, "order"), h("dd", {}, "none of this id"));
  $("order-problem").hidden = true;
  $("order-lines").tBodies[0].replaceChildren();
  $("timeline").tBodies[0].replaceChildren(emptyRow(4, "No order: the execution alone"));
  $("trace-id").textContent = "";
  $("trace-waterfall").replaceChildren(h("div", { class: "note" }, "No order, no trace."));
  $("order-detail").hidden = false;
  await loadExecution({ name });
}

/** Reload whatever the detail shows. */
function reopen() {
  if (state.orderId) return openOrder(state.orderId);
  if (state.executionName) return openExecution(state.executionName);
  return null;
}

function renderOrder({ order, execution, timeline }) {
  $("order-title").textContent = order.order_id;
  const fact = (label, value) => [h("dt", {}, label), h("dd", {}, value)];
  $("order-facts").replaceChildren(
    ...fact("status", statusPill(order.status)),
    ...fact("customer", order.customer_id),
    ...fact("total", money(order.total)),
    ...fact("created", when(order.created_at)),
    ...fact("updated", when(order.updated_at)),
    ...fact("execution", execution ? h("span", { class: "mono" }, execution.name) : "none"),
    ...fact("saga", execution ? statusPill(execution.status) : "–"),
    ...fact("state", execution?.current_state || "–"),
  );
  const problems = [
    order.failure_reason && `failure: ${order.failure_reason}`,
    execution?.error && `saga error: ${execution.error}${execution.cause ? ` (${execution.cause})` : ""}`,
  ].filter(Boolean);
  $("order-problem").textContent = problems.join(" · ");
  $("order-problem").hidden = !problems.length;
  $("order-lines").tBodies[0].replaceChildren(
    ...(order.lines || []).map((line) =>
      h("tr", {}, h("td", { class: "mono" }, line.sku), h("td", { class: "num" }, String(line.quantity)), h("td", { class: "num" }, money(line.unit_price))),
    ),
  );
  $("timeline").tBodies[0].replaceChildren(
    ...(timeline.length
      ? timeline.map((entry) =>
          h(
            "tr",
            { class: "timeline-row", "data-source": entry.source, "data-kind": entry.kind },
            h("td", { class: "mono", title: entry.at }, timeOnly(entry.at)),
            h("td", {}, h("span", { class: `source ${entry.source}` }, entry.source)),
            h("td", {}, entry.kind),
            h("td", { class: "detail-text" }, detailText(entry.detail)),
          ),
        )
      : [emptyRow(4, "Nothing recorded yet")]),
  );
}

// -- saga execution on its state machine ----------------------------------------------------

async function loadExecution(execution) {
  const button = $("redrive-execution");
  button.hidden = true;
  const diagram = $("saga-diagram");
  if (!execution) {
    $("execution-status").textContent = "";
    diagram.replaceChildren(h("div", { class: "note" }, "No saga execution for this order."));
    return;
  }
  const view = await api(`executions/${encodeURIComponent(execution.name)}`);
  $("execution-status").textContent = `${view.execution.status}${view.current_state ? ` · in ${view.current_state}` : ""}`;
  diagram.replaceChildren(sagaDiagram(view));
  diagram.dataset.execution = view.execution.name;
  diagram.dataset.status = view.execution.status;
  button.hidden = !view.redrivable;
  button.onclick = () => guarded(() => redriveExecution(view.execution.name));
}

async function redriveExecution(name) {
  if (!confirm(`Re-drive execution ${name} from the state that failed?`)) return;
  const answer = await api(`executions/${encodeURIComponent(name)}/redrive`, { method: "POST", body: {} });
  showStatus(`Re-drove ${answer.name}: ${answer.status} from ${answer.state}`, "ok");
  await Promise.all([reopen(), loadAlarms()]);
}

/** Rows by BFS depth from start_at, columns ordered by their parents' columns. */
function layout(definition) {
  const byName = new Map(definition.states.map((st) => [st.name, st]));
  const depth = new Map([[definition.start_at, 0]]);
  const rows = [[definition.start_at]];
  const queue = [definition.start_at];
  while (queue.length) {
    const name = queue.shift();
    for (const next of byName.get(name)?.next || []) {
      if (depth.has(next) || !byName.has(next)) continue;
      depth.set(next, depth.get(name) + 1);
      (rows[depth.get(next)] ||= []).push(next);
      queue.push(next);
    }
  }
  const unreached = definition.states.map((st) => st.name).filter((name) => !depth.has(name));
  if (unreached.length) rows.push(unreached);
  const column = new Map();
  rows.forEach((row, index) => {
    if (index > 0) {
      const parents = (name) =>
        definition.states.filter((st) => (st.next || []).includes(name) && column.has(st.name) && depth.get(st.name) < index);
      const weight = (name) => {
        const found = parents(name);
        return found.length ? found.reduce((sum, st) => sum + column.get(st.name), 0) / found.length : Infinity;
      };
      const order = new Map(row.map((name, i) => [name, i]));
      row.sort((a, b) => weight(a) - weight(b) || order.get(a) - order.get(b));
    }
    row.forEach((name, i) => column.set(name, i));
  });
  return { rows, byName };
}

function sagaDiagram({ definition, path, current_state: current, execution }) {
  const { rows, byName } = layout(definition);
  const W = 150, H = 34, GX = 26, GY = 34, PAD = 16;
  const widest = Math.max(...rows.map((row) => row.length));
  const width = PAD * 2 + widest * W + (widest - 1) * GX;
  const height = PAD * 2 + rows.length * H + (rows.length - 1) * GY;
  const at = new Map();
  rows.forEach((row, r) => {
    const offset = (width - (row.length * W + (row.length - 1) * GX)) / 2;
    row.forEach((name, c) => at.set(name, { x: offset + c * (W + GX), y: PAD + r * (H + GY), row: r }));
  });

  const visited = new Set(path.map((step) => step.state));
  const attempts = new Map();
  for (const step of path) attempts.set(step.state, (attempts.get(step.state) || 0) + Math.max(step.attempts || 1, 1));
  const visits = new Map();
  for (const step of path) visits.set(step.state, (visits.get(step.state) || 0) + 1);
  const failed = new Set();
  if (/FAILED|TIMED_OUT|ABORTED/.test(execution.status)) {
    const last = [...path].reverse().find((step) => step.error) || path[path.length - 1];
    if (last) failed.add(last.state);
  }
  const taken = new Set();
  for (let i = 1; i < path.length; i++) taken.add(`${path[i - 1].state}->${path[i].state}`);

  const marker = (id, cls) =>
    s("marker", { id, class: cls, viewBox: "0 0 8 8", refX: 7, refY: 4, markerWidth: 7, markerHeight: 7, markerUnits: "userSpaceOnUse", orient: "auto-start-reverse" },
      s("path", { d: "M0,0 L8,4 L0,8 z" }));
  const svg = s("svg", { viewBox: `0 0 ${width} ${height}`, style: `max-width:${width * 1.25}px`, role: "img", "aria-label": "saga state machine" },
    s("defs", {}, marker("arrow", ""), marker("arrow-taken", "taken")));

  const edges = s("g", { class: "edges" });
  const drawn = [];
  for (const st of definition.states) {
    for (const next of st.next || []) {
      const a = at.get(st.name), b = at.get(next);
      if (!a || !b) continue;
      const key = `${st.name}->${next}`;
      if (drawn.includes(key)) continue;
      drawn.push(key);
      let d;
      if (b.row > a.row) {
        const x1 = a.x + W / 2, y1 = a.y + H, x2 = b.x + W / 2, y2 = b.y;
        const bend = (y2 - y1) / 2;
        d = `M${x1},${y1} C${x1},${y1 + bend} ${x2},${y2 - bend} ${x2},${y2 - 1}`;
      } else {
        // A jump back up (a Catch to an earlier state) or along a row: round the boxes' sides.
        const right = b.x >= a.x;
        const x1 = right ? a.x + W : a.x, y1 = a.y + H / 2;
        const x2 = right ? b.x + W : b.x, y2 = b.y + H / 2;
        const out = (right ? 1 : -1) * (GX + 10);
        d = `M${x1},${y1} C${x1 + out},${y1} ${x2 + out},${y2} ${x2 + (right ? 1 : -1)},${y2}`;
      }
      const isTaken = taken.has(key);
      edges.append(s("path", { class: `edge${isTaken ? " taken" : ""}`, d, "marker-end": `url(#${isTaken ? "arrow-taken" : "arrow"})`, "data-from": st.name, "data-to": next }));
    }
  }
  // Taken edges last, so they are drawn over the others.
  for (const edge of [...edges.querySelectorAll("path.taken")]) edges.append(edge);
  svg.append(edges);

  for (const [name, pos] of at) {
    const st = byName.get(name);
    const classes = ["state"];
    if (visited.has(name)) classes.push("visited");
    if (name === current) classes.push("current");
    if (name === current && execution.status === "SUCCEEDED") classes.push("succeeded");
    if (failed.has(name)) classes.push("failed");
    if (st.end) classes.push("terminal");
    const label = name.length > 22 ? `${name.slice(0, 21)}…` : name;
    const group = s("g", { class: classes.join(" "), "data-state": name, "data-type": st.type, transform: `translate(${pos.x},${pos.y})` },
      s("title", {}, `${name} (${st.type})${visits.get(name) ? ` · visited ${visits.get(name)}×, ${attempts.get(name)} attempt(s)` : ""}`),
      s("rect", { width: W, height: H, rx: st.type === "Choice" ? 14 : 4 }),
      s("text", { x: W / 2, y: 15, "text-anchor": "middle" }, label),
      s("text", { class: "type", x: W / 2, y: 27, "text-anchor": "middle" }, st.type + (st.end ? " · end" : "")));
    const retries = (attempts.get(name) || 0) - (visits.get(name) || 0);
    if (retries > 0) {
      group.append(s("g", { class: "retries", transform: `translate(${W - 2},2)` },
        s("title", {}, `${retries} retr${retries === 1 ? "y" : "ies"}`),
        s("rect", { x: -12, y: -7, width: 24, height: 14, rx: 7 }),
        s("text", { y: 3, "text-anchor": "middle" }, `↻${retries}`)));
    }
    svg.append(group);
  }
  const wrap = h("div", {}, svg,
    h("div", { class: "legend" },
      h("span", {}, h("i", { class: "l-visited" }), "visited"),
      h("span", {}, h("i", { class: "l-current" }), "current"),
      h("span", {}, h("i", { class: "l-failed" }), "failed"),
      h("span", {}, h("i", { class: "l-succeeded" }), "succeeded"),
      h("span", {}, `path: ${path.map((step) => step.state).join(" → ") || "not started"}`)));
  return wrap;
}

// -- trace waterfall ------------------------------------------------------------------------

const SERVICE_COLOURS = ["#2458d6", "#0b7a75", "#6b3fc4", "#b25e09", "#2f6b1f", "#a3408a", "#475067", "#8a6100", "#1b7fa6", "#7a4b2a"];

function serviceColour(service) {
  let hash = 0;
  for (const ch of service || "") hash = (hash * 31 + ch.charCodeAt(0)) >>> 0;
  return SERVICE_COLOURS[hash % SERVICE_COLOURS.length];
}

/** Spans depth-first under their parents (siblings by start); orphans are roots. */
function spanTree(spans) {
  const ids = new Set(spans.map((span) => span.span_id));
  const children = new Map();
  for (const span of spans) {
    const parent = span.parent_span_id && ids.has(span.parent_span_id) ? span.parent_span_id : null;
    if (!children.has(parent)) children.set(parent, []);
    children.get(parent).push(span);
  }
  const ordered = [];
  const walk = (parent, depth) => {
    for (const span of (children.get(parent) || []).sort((a, b) => a.start_ms - b.start_ms)) {
      ordered.push({ span, depth });
      walk(span.span_id, depth + 1);
    }
  };
  walk(null, 0);
  return ordered;
}

async function loadTrace(traceId) {
  const box = $("trace-waterfall");
  $("trace-id").textContent = traceId || "";
  if (!traceId) {
    box.replaceChildren(h("div", { class: "note" }, "No trace id recorded for this order."));
    return;
  }
  let trace;
  try {
    trace = await api(`traces/${encodeURIComponent(traceId)}`);
  } catch (error) {
    if (error instanceof ApiError && error.status === 404) {
      box.replaceChildren(h("div", { class: "note" }, "No span of this trace has been exported yet (tracing off, or the batch is still on its way): reload."));
      return;
    }
    throw error;
  }
  const total = Math.max(...trace.spans.map((span) => span.start_ms + span.duration_ms), 0.001);
  const ticks = [0, 0.25, 0.5, 0.75].map((f) => h("span", { style: `left:${f * 100}%` }, ms(total * f)));
  const services = new Set(trace.spans.map((span) => span.service));
  box.replaceChildren(
    h("div", { class: "span-axis" }, h("div", { class: "span-label" }, `${trace.spans.length} spans · ${services.size} services`), h("div", { class: "axis-ticks" }, ticks), h("div", { class: "span-ms" }, "duration")),
    ...spanTree(trace.spans).map(({ span, depth }) => {
      const attributes = Object.entries(span.attributes || {}).map(([k, v]) => `${k}=${v}`).join("\n");
      return h("div", {
          class: `span-row${span.status === "error" ? " error" : ""}`,
          "data-span-name": span.name, "data-service": span.service, "data-span-id": span.span_id,
          title: `${span.service} · ${span.name}\nstart +${ms(span.start_ms)}, ${ms(span.duration_ms)}, ${span.status}${attributes ? `\n${attributes}` : ""}`,
        },
        h("div", { class: "span-label", style: `padding-left:${6 + depth * 12}px` },
          h("span", { class: "span-service", style: `background:${serviceColour(span.service)}` }, span.service), span.name),
        h("div", { class: "span-track" },
          h("div", { class: "span-bar", style: `left:${(span.start_ms / total) * 100}%;width:${Math.max((span.duration_ms / total) * 100, 0.2)}%;background:${serviceColour(span.service)}` })),
        h("div", { class: "span-ms" }, ms(span.duration_ms)));
    }),
  );
}

// -- queues and dead letters ----------------------------------------------------------------

async function loadQueues(highlight) {
  const { queues } = await api("queues");
  const dlqOf = new Map(queues.filter((q) => q.dlq && q.source).map((q) => [q.source, q]));
  const sources = queues.filter((q) => !q.dlq);
  const orphanDlqs = queues.filter((q) => q.dlq && !sources.some((src) => src.name === q.source));
  $("queue-list").tBodies[0].replaceChildren(
    ...[...sources, ...orphanDlqs].map((queue) => {
      const dead = queue.dlq ? queue : dlqOf.get(queue.name);
      const name = queue.dlq ? queue.source || queue.name : queue.name;
      const deadCount = dead ? dead.visible + dead.in_flight : 0;
      return h("tr", { class: `queue-row${highlight === name || highlight === dead?.name ? " selected" : ""}`, "data-queue": name, "data-dead": deadCount },
        h("td", { class: "mono" }, name),
        h("td", { class: "num" }, queue.dlq ? "–" : String(queue.visible)),
        h("td", { class: "num" }, queue.dlq ? "–" : String(queue.in_flight)),
        h("td", { class: "num" }, queue.dlq ? "–" : age(queue.oldest_age_seconds)),
        h("td", { class: "mono" }, dead?.name || "–"),
        h("td", { class: `num dead-count${deadCount ? " some" : ""}` }, dead ? String(deadCount) : "–"),
        h("td", { class: "num" }, dead ? age(dead.oldest_age_seconds) : "–"),
        h("td", {},
          h("button", { type: "button", class: "quiet dlq-inspect", disabled: !dead, onclick: () => guarded(() => inspectDlq(name)) }, "Inspect"),
          " ",
          h("button", { type: "button", class: "write dlq-redrive", disabled: !deadCount, onclick: () => guarded(() => redriveQueue(name, dead.name, deadCount)) }, "Re-drive")));
    }),
  );
  if (!queues.length) $("queue-list").tBodies[0].replaceChildren(emptyRow(8, "No queues declared"));
  if (state.dlqOpen) await inspectDlq(state.dlqOpen);
}

async function inspectDlq(queue) {
  const view = await api(`queues/${encodeURIComponent(queue)}/dead-letters?limit=50`);
  state.dlqOpen = queue;
  const box = $("dlq-messages");
  box.dataset.queue = queue;
  box.replaceChildren(
    h("h3", {}, `${view.dlq}: ${view.messages.length} dead letter${view.messages.length === 1 ? "" : "s"} (peeked, not received)`, " ",
      h("button", { type: "button", class: "quiet", onclick: () => { state.dlqOpen = null; box.hidden = true; } }, "Close")),
    h("table", { class: "grid compact" },
      h("thead", {}, h("tr", {}, h("th", {}, "message"), h("th", {}, "sent"), h("th", { class: "num" }, "receives"), h("th", {}, "event"), h("th", {}, "order"), h("th", {}, "body"))),
      h("tbody", {},
        view.messages.length
          ? view.messages.map((message) =>
              h("tr", { class: "dlq-message", "data-message-id": message.message_id },
                h("td", { class: "mono" }, message.message_id),
                h("td", { class: "mono" }, when(message.sent_at)),
                h("td", { class: "num" }, String(message.receive_count)),
                h("td", {}, message.event_type || "–"),
                h("td", {}, message.order_id ? h("a", { href: `#orders/${message.order_id}`, class: "mono" }, shortId(message.order_id)) : "–"),
                h("td", {}, h("pre", {}, message.body))))
          : [emptyRow(6, "The dead-letter queue is empty")])),
  );
  box.hidden = false;
}

async function redriveQueue(queue, dlq, count) {
  if (!confirm(`Move the ${count} message(s) of ${dlq} back to ${queue}?`)) return;
  const answer = await api(`queues/${encodeURIComponent(queue)}/redrive`, { method: "POST", body: { max_messages: null } });
  showStatus(`Re-drove ${answer.redriven} message${answer.redriven === 1 ? "" : "s"} from ${dlq} to ${answer.queue}`, "ok");
  await Promise.all([loadQueues(queue), loadAlarms()]);
}

// -- stock ----------------------------------------------------------------------------------

async function loadStock(prefix) {
  const params = new URLSearchParams({ limit: "100" });
  if (prefix) params.set("sku", prefix);
  const { items } = await api(`stock?${params}`);
  $("stock-count").textContent = `${items.length} SKU${items.length === 1 ? "" : "s"}`;
  $("stock-list").tBodies[0].replaceChildren(
    ...(items.length
      ? items.map((item) =>
          h("tr", { class: "stock-row", "data-sku": item.sku },
            h("td", { class: "mono" }, item.sku),
            h("td", { class: "num" }, String(item.on_hand)),
            h("td", { class: "num" }, String(item.reserved)),
            h("td", { class: `num${item.available <= 0 ? " severity-critical" : ""}` }, String(item.available)),
            h("td", {},
              item.reservations.length
                ? h("table", { class: "reservations" }, item.reservations.map((r) =>
                    h("tr", { class: "reservation", "data-reservation-id": r.reservation_id },
                      h("td", {}, h("a", { href: `#orders/${r.order_id}`, class: "mono", title: r.order_id }, shortId(r.order_id))),
                      h("td", { class: "num" }, `×${r.quantity}`),
                      h("td", {}, statusPill(r.status)),
                      h("td", { class: "muted" }, r.expires_at ? `expires ${when(r.expires_at).slice(11, 19)}` : ""))))
                : h("span", { class: "muted" }, "none"))))
      : [emptyRow(5, prefix ? `No SKU starts with ${prefix}` : "No stock recorded")]),
  );
}

// -- alarms ---------------------------------------------------------------------------------

function alarmTarget(points) {
  const panel =
    points.panel === "payment" || (points.panel === "executions" && !points.ref) ? "orders" : points.panel;
  const ref = points.ref ? `/${encodeURIComponent(points.ref)}` : "";
  return { href: `#${panel}${ref}`, text: `${points.panel}${points.ref ? `: ${points.ref}` : ""}` };
}

async function loadAlarms() {
  const { alarms } = await api("alarms");
  const sorted = [...alarms].sort((a, b) => Number(b.firing) - Number(a.firing) || a.name.localeCompare(b.name));
  const firing = sorted.filter((alarm) => alarm.firing).length;
  const count = $("alarm-count");
  count.textContent = String(firing);
  count.hidden = firing === 0;
  $("alarm-list").tBodies[0].replaceChildren(
    ...(sorted.length
      ? sorted.map((alarm) => {
          const target = alarmTarget(alarm.points_at);
          return h("tr", { class: `alarm-row${alarm.firing ? " firing" : ""}`, "data-alarm": alarm.name },
            h("td", {}, alarm.name),
            h("td", { class: `severity-${alarm.severity}` }, alarm.severity),
            h("td", {}, alarm.firing ? h("span", { class: "pill bad" }, "FIRING") : h("span", { class: "pill good" }, "ok")),
            h("td", { class: "num" }, alarm.value === null ? "–" : String(+alarm.value.toFixed(2))),
            h("td", {}, alarm.summary),
            h("td", { class: "mono" }, alarm.cloudwatch_alarm || "–"),
            h("td", {}, h("a", { href: target.href, class: "alarm-link", "data-panel": alarm.points_at.panel }, target.text)));
        })
      : [emptyRow(7, "No alarm rules")]),
  );
}

// -- wiring ---------------------------------------------------------------------------------

function start() {
  $("sign-in-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const token = $("token").value.trim();
    $("token").value = "";
    if (token) signIn(token);
    else signedOut("Paste a token with the admin scope (python -m gateway.dev_token --scope admin).");
  });
  $("sign-out").addEventListener("click", () => signedOut(""));
  for (const tab of document.querySelectorAll(".tab")) {
    tab.addEventListener("click", () => {
      if (location.hash.slice(1).split("/")[0] === tab.dataset.panel) route();
      else location.hash = tab.dataset.panel;
    });
  }
  $("order-search-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const q = $("order-search").value.trim();
    guarded(() => searchOrders(q, { open: q }));
  });
  $("order-refresh").addEventListener("click", () => guarded(reopen));
  $("queues-reload").addEventListener("click", () => guarded(() => loadQueues()));
  $("stock-search-form").addEventListener("submit", (event) => {
    event.preventDefault();
    guarded(() => loadStock($("stock-search").value.trim()));
  });
  $("alarms-reload").addEventListener("click", () => guarded(loadAlarms));
  window.addEventListener("hashchange", route);
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) signIn(token);
}

start();
