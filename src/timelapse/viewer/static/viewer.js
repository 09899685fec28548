// The page of `timelapse view`: a time-travel view of one trace, served by src/timelapse/viewer/
// (docs/view.md is the contract of the routes used here).
//
// How it is built:
//  - `api(route)` fetches one JSON answer. A 503 with `retry: true` ("not read yet": the server is
//    still reading the trace) is retried after a short wait, with a notice, until it is answered.
//  - The page holds the trace's header (`trace`, from /api/trace, polled every 500 ms until the
//    server has read it all) and the current step (`current`, from /api/step) — never the whole
//    recording. What it keeps besides are small caches of bounded size (`BoundedCache`): source
//    files, pages of output.
//  - Every move (a button, a key, the slider, a stack frame, a tree entry...) goes through one
//    queue of moves (`move(...)`), run one at a time, so that pressing → three times moves three
//    steps, each from where the last one landed. A move to a fixed step (the slider, a click)
//    makes the moves queued before it pointless, and drops them.
//  - `showStep(n)` fetches step n and redraws each pane from it: source, stack, locals, output,
//    the current call in the tree, the history's marker, the position (step number, slider, the
//    URL's #step=N).
//  - Every text from the trace is put in the page with textContent (`el(...)`), never as HTML:
//    a trace holds whatever the program had in its variables.
"use strict";

// -- the server's answers --------------------------------------------------------------------------

class NotReadYet extends Error {}

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

const RETRY_DELAY_MS = 300;

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

// One GET of a route, as JSON; throws ApiError (with the server's one-line reason) or NotReadYet.
async function fetchOnce(route) {
  let response;
  try {
    response = await fetch(route, { headers: { Accept: "application/json" } });
  } catch (error) {
    throw new ApiError(0, `the viewer's server does not answer (${error.message}); is timelapse view still running?`);
  }
  let body = null;
  try {
    body = await response.json();
  } catch (error) {
    body = null;
  }
  if (response.ok && body !== null) return body;
  const reason = body && typeof body.error === "string" ? body.error : `${response.status} ${response.statusText}`;
  if (response.status === 503 && body && body.retry) throw new NotReadYet(reason);
  throw new ApiError(response.status, reason);
}

// A route's answer, waiting while the server says it has not read that far yet. `giveUp()` is asked
// before each retry: true abandons the wait (a newer move made this one pointless) and returns null.
async function api(route, giveUp = () => false) {
  const noticeKey = `not read yet: ${route}`;
  try {
    for (;;) {
      try {
        return await fetchOnce(route);
      } catch (error) {
        if (!(error instanceof NotReadYet)) throw error;
        showNotice(noticeKey, `Not read yet (${error.message}); trying again…`);
        if (giveUp()) return null;
        await sleep(RETRY_DELAY_MS);
        if (giveUp()) return null;
      }
    }
  } finally {
    hideNotice(noticeKey);
  }
}

// -- small helpers -----------------------------------------------------------------------------------

// el("span", {className: "x", text: "..."}, child, ...): an element; text always goes in as text.
function el(tag, properties = {}, ...children) {
  const element = document.createElement(tag);
  for (const [key, value] of Object.entries(properties)) {
    if (value === undefined || value === null) continue;
    if (key === "text") element.textContent = value;
    else if (key === "dataset") Object.assign(element.dataset, value);
    else if (key.startsWith("on")) element.addEventListener(key.slice(2), value);
    else if (key === "className" || key === "title" || key === "type" || key === "hidden") element[key] = value;
    else element.setAttribute(key, value);
  }
  for (const child of children) {
    if (child !== null && child !== undefined) element.append(child);
  }
  return element;
}

const $ = (id) => document.getElementById(id);

// A Map that forgets its least recently used entries beyond `limit`.
class BoundedCache {
  constructor(limit) {
    this.limit = limit;
    this.entries = new Map();
  }
  get(key) {
    if (!this.entries.has(key)) return undefined;
    const value = this.entries.get(key);
    this.entries.delete(key); // re-inserted: now the most recently used
    this.entries.set(key, value);
    return value;
  }
  set(key, value) {
    this.entries.delete(key);
    this.entries.set(key, value);
    while (this.entries.size > this.limit) this.entries.delete(this.entries.keys().next().value);
  }
  clear() {
    this.entries.clear();
  }
}

function baseName(path) {
  const text = String(path);
  const slash = text.lastIndexOf("/");
  return slash >= 0 ? text.slice(slash + 1) : text;
}

function pathName(pathId) {
  return (trace && trace.paths && trace.paths[pathId]) || `path ${pathId}`;
}

// -- notices and errors ------------------------------------------------------------------------------

const notices = new Map(); // key -> text: several reasons can be shown at once

function showNotice(key, text) {
  notices.set(key, text);
  renderNotices();
}

function hideNotice(key) {
  if (notices.delete(key)) renderNotices();
}

function flashNotice(key, text, ms = 2500) {
  showNotice(key, text);
  setTimeout(() => {
    if (notices.get(key) === text) hideNotice(key);
  }, ms);
}

function renderNotices() {
  const box = $("notice");
  box.textContent = [...notices.values()].join(" · ");
  box.hidden = notices.size === 0;
}

function showError(error) {
  const text = error instanceof Error ? error.message : String(error);
  $("error-text").textContent = text;
  $("error").hidden = false;
  console.error(error);
}

function hideError() {
  $("error").hidden = true;
}

// -- state -----------------------------------------------------------------------------------------

let trace = null; // the /api/trace answer, refreshed while the server reads
let current = null; // the /api/step answer of the step shown
const sourceCache = new BoundedCache(16); // path_id -> /api/source answer
const drawnSources = new BoundedCache(4); // path_id -> {pathId, nodes: [...], lines: [line element, ...]}
let sourceShown = null; // the drawn file in the source pane

// -- the trace's header, polled until the server has read it all ------------------------------------

const POLL_MS = 500;

let completeSeen = false; // onTraceComplete has run (once, however many answers say complete)

// Asks for the header once. Only loadTrace (the start, and the poll loop) schedules the next poll:
// a refresh for another reason (End while reading) must not start a second loop.
async function refreshTrace() {
  trace = await api("/api/trace");
  renderHeader();
  if (trace.failure) showNotice("failure", `The trace could not be read to its end (${trace.failure}): what was read is shown.`);
  if (trace.complete && !completeSeen) {
    completeSeen = true;
    onTraceComplete();
  }
}

async function loadTrace() {
  await refreshTrace();
  if (!trace.complete) setTimeout(pollTrace, POLL_MS);
}

async function pollTrace() {
  try {
    await loadTrace();
  } catch (error) {
    showError(error);
    setTimeout(pollTrace, POLL_MS * 4); // the server may come back
  }
}

// Answers fetched while the server was still reading may lack what came later: the lines that ran
// of a file, the children of a call. They are asked again (the call tree starts again from its root).
function onTraceComplete() {
  const hadSources = sourceCache.entries.size > 0;
  sourceCache.clear();
  outputPages.clear();
  if (treeBuiltIncomplete) startTreeLoad();
  drawnSources.clear();
  if (current !== null && hadSources) {
    sourceShown = null; // the lines that ran may have grown: draw the file again
    drawPane("source", renderSource);
  }
}

function formatDuration(seconds) {
  if (typeof seconds !== "number") return "?";
  if (seconds < 1) return `${(seconds * 1000).toFixed(0)} ms`;
  if (seconds < 120) return `${seconds.toFixed(2)} s`;
  return `${Math.floor(seconds / 60)} min ${Math.round(seconds % 60)} s`;
}

// 1234567 -> "1,234,567": counts in the header; step numbers stay plain (they are typed in #step=N).
function formatCount(n) {
  return typeof n === "number" ? n.toLocaleString("en-US") : "?";
}

function renderHeader() {
  const program = trace.program || "(unknown program)";
  $("program").textContent = program;
  $("program").title = program;
  $("args").textContent = (trace.args || []).join(" ");
  document.title = `timelapse view · ${baseName(program)}`;
  $("exit-status").textContent = trace.exit_status === null || trace.exit_status === undefined ? "?" : String(trace.exit_status);
  $("exit-status").classList.toggle("failed", typeof trace.exit_status === "number" && trace.exit_status !== 0);
  $("duration").textContent = formatDuration(trace.duration_s);
  $("steps-count").textContent = formatCount(trace.steps) + (trace.complete ? "" : "…");
  $("calls-count").textContent = formatCount(trace.calls) + (trace.complete ? "" : "…");
  $("format").textContent = trace.format || "?";
  $("reading").hidden = trace.complete;
  $("reading-count").textContent = formatCount(trace.steps);
  const slider = $("slider");
  slider.max = String(Math.max(0, trace.steps - 1));
  $("step-last").textContent = trace.steps > 0 ? String(trace.steps - 1) + (trace.complete ? "" : "…") : "–";
  renderThread();
}

function renderThread() {
  const badge = $("thread");
  const threads = (trace && trace.threads) || [];
  badge.classList.toggle("several", threads.length > 1);
  if (current === null) {
    badge.textContent = "";
    return;
  }
  badge.textContent = threads.length > 1
    ? `thread ${current.thread} (of ${threads.length}: ${threads.join(", ")})`
    : `thread ${current.thread}`;
}

// -- moves -----------------------------------------------------------------------------------------
//
// A move is {to: N} (a fixed step), {by: ±1} (relative to the step shown when its turn comes) or
// {how: "over" | "back_over" | "out" | "back_out" | "next_call" | "prev_call"} (asked of /api/go).

const moves = [];
const MAX_QUEUED_MOVES = 32; // a held-down key must not pile up minutes of moves
let moving = false;

// A move waiting for a step not read yet gives up when a move to a fixed step is queued behind it:
// that one lands where it lands whatever this one would have done. Relative moves wait their turn.
const jumpQueued = () => moves.some((request) => request.to !== undefined);

function move(request) {
  if (request.to !== undefined) {
    moves.length = 0; // a fixed target: what was queued before it no longer matters
  } else if (moves.length >= MAX_QUEUED_MOVES) {
    return;
  }
  moves.push(request);
  if (!moving) runMoves();
}

async function runMoves() {
  moving = true;
  try {
    while (moves.length > 0) {
      const request = moves.shift();
      try {
        const target = await targetOf(request);
        if (target === null) continue;
        await showStep(target);
      } catch (error) {
        showError(error);
      }
    }
  } finally {
    moving = false;
  }
}

const NOWHERE = {
  over: "no later step in this frame or its callers",
  back_over: "no earlier step in this frame or its callers",
  out: "this call has no caller step after it",
  back_out: "this call has no caller step before it",
  next_call: "no later call of this function (in this thread)",
  prev_call: "no earlier call of this function (in this thread)",
};

async function targetOf(request) {
  if (request.to !== undefined) return request.to;
  if (current === null) return 0;
  if (request.by !== undefined) {
    const target = current.index + request.by;
    if (target < 0) {
      flashNotice("nowhere", "this is the first step");
      return null;
    }
    if (trace.complete && target >= trace.steps) {
      flashNotice("nowhere", "this is the last step");
      return null;
    }
    return target;
  }
  const answer = await api(`/api/go?i=${current.index}&how=${encodeURIComponent(request.how)}`, jumpQueued);
  if (answer === null) return null; // superseded
  if (answer.step === null) {
    flashNotice("nowhere", NOWHERE[request.how] || "nowhere to go");
    return null;
  }
  return answer.step;
}

function lastStep() {
  return trace.steps - 1;
}

// -- showing one step ------------------------------------------------------------------------------

async function showStep(n) {
  n = Math.max(0, Math.trunc(n));
  if (trace.complete) n = Math.min(n, lastStep());
  let step;
  try {
    step = await api(`/api/step?i=${n}`, jumpQueued);
  } catch (error) {
    if (error instanceof ApiError && error.status === 404 && trace.complete && n !== lastStep()) {
      flashNotice("nowhere", `there is no step ${n}; showing the last one`);
      return showStep(lastStep());
    }
    throw error;
  }
  if (step === null) return; // a newer move came while waiting
  current = step;
  hideError();
  // Each pane is drawn on its own: one that fails shows its error and leaves the others right.
  await Promise.all([
    drawPane("source", renderSource),
    drawPane("stack", renderStack),
    drawPane("locals", renderLocals),
    drawPane("output", renderOutput),
    drawPane("tree", markCurrentCall),
    drawPane("history", markHistory),
  ]);
  renderPosition();
}

async function drawPane(name, draw) {
  try {
    await draw();
  } catch (error) {
    showError(new Error(`${name}: ${error.message}`));
  }
}

function renderPosition() {
  $("step-number").textContent = String(current.index);
  $("slider").value = String(current.index);
  renderThread();
  const hash = `#step=${current.index}`;
  if (location.hash !== hash) history.replaceState(null, "", hash);
  document.body.dataset.step = String(current.index);
}

function stepFromHash() {
  const match = /^#step=(\d+)$/.exec(location.hash);
  return match ? Number(match[1]) : null;
}

// -- source pane -------------------------------------------------------------------------------------

async function sourceOf(pathId) {
  let source = sourceCache.get(pathId);
  if (source === undefined) {
    source = await api(`/api/source?path=${pathId}`);
    sourceCache.set(pathId, source);
  }
  return source;
}

async function renderSource() {
  const pathId = current.path_id;
  const line = current.line;
  const frame = current.stack.length > 0 ? current.stack[current.stack.length - 1] : null;
  $("source-where").textContent = `${frame ? frame.function + " · " : ""}${baseName(pathName(pathId))}:${line}`;
  $("source-where").title = pathName(pathId);
  if (sourceShown === null || sourceShown.pathId !== pathId) {
    const drawn = drawnSources.get(pathId);
    if (drawn !== undefined) {
      $("source").replaceChildren(...drawn.nodes);
      sourceShown = drawn;
    } else {
      let source;
      try {
        source = await sourceOf(pathId);
      } catch (error) {
        sourceShown = null; // never leave another file's lines up as if they were this one's
        $("source").replaceChildren(el("p", { className: "error-line", text: `${pathName(pathId)}: ${error.message}` }));
        throw error;
      }
      if (current === null || current.path_id !== pathId) return; // moved on while fetching
      drawSourceFile(pathId, source);
    }
  }
  const box = $("source");
  for (const old of box.querySelectorAll(".line.current")) old.classList.remove("current");
  const element = sourceShown.lines[line - 1];
  if (element) {
    element.classList.add("current");
    scrollIntoViewIfHidden(box, element);
  }
}

function drawSourceFile(pathId, source) {
  const box = $("source");
  if (source.text === null || source.text === undefined) {
    sourceShown = { pathId, nodes: [el("p", { className: "empty", text: `The trace holds no copy of ${source.path}.` })], lines: [] };
    box.replaceChildren(...sourceShown.nodes);
    drawnSources.set(pathId, sourceShown);
    return;
  }
  const ran = new Set(source.lines_run || []);
  const lines = highlightPython(source.text);
  const elements = lines.map((tokens, index) => {
    const number = index + 1;
    const code = el("span", { className: "code" });
    for (const [kind, text] of tokens) code.append(kind ? el("span", { className: kind, text }) : text);
    if (tokens.length === 0) code.append("\u200b"); // an empty line keeps its height
    return el("div", { className: ran.has(number) ? "line ran" : "line", dataset: { line: String(number) } },
      el("span", { className: "lineno", text: String(number) }),
      el("span", { className: "mark", text: ran.has(number) ? "●" : "", title: ran.has(number) ? "this line ran" : undefined }),
      code);
  });
  box.replaceChildren(...elements);
  sourceShown = { pathId, nodes: elements, lines: elements };
  drawnSources.set(pathId, sourceShown);
}

function scrollIntoViewIfHidden(container, element) {
  const box = container.getBoundingClientRect();
  const line = element.getBoundingClientRect();
  if (line.top < box.top + line.height || line.bottom > box.bottom - line.height) {
    container.scrollTop += line.top - box.top - (box.height - line.height) / 2;
  }
}

// A light Python highlighter: [[kind, text], ...] per line, kind being a CSS class or "" for plain
// text. Strings may span lines (docstrings), which is why the whole text is tokenized at once.
const PYTHON_KEYWORDS = new Set(("False None True and as assert async await break class continue def del elif else " +
  "except finally for from global if import in is lambda nonlocal not or pass raise return try while with yield " +
  "match case").split(" "));
const PYTHON_TOKEN = /("""[\s\S]*?(?:"""|$)|'''[\s\S]*?(?:'''|$)|"(?:[^"\\\n]|\\.)*"?|'(?:[^'\\\n]|\\.)*'?)|(#[^\n]*)|\b(\d[\d_]*(?:\.\d*)?(?:[eE][+-]?\d+)?j?)\b|([A-Za-z_][A-Za-z_0-9]*)/g;
const HIGHLIGHT_LIMIT = 300000; // characters: a bigger file is shown plain

function highlightPython(text) {
  const lines = [[]];
  const add = (kind, piece) => {
    const parts = piece.split("\n");
    parts.forEach((part, index) => {
      if (index > 0) lines.push([]);
      if (part) lines[lines.length - 1].push([kind, part]);
    });
  };
  if (text.length > HIGHLIGHT_LIMIT) {
    add("", text);
  } else {
    let last = 0;
    let previousWord = "";
    for (const match of text.matchAll(PYTHON_TOKEN)) {
      if (match.index > last) add("", text.slice(last, match.index));
      const [token, string, comment, number, word] = match;
      if (string) add("tok-string", token);
      else if (comment) add("tok-comment", token);
      else if (number) add("tok-number", token);
      else if (word && PYTHON_KEYWORDS.has(word)) add("tok-keyword", token);
      else if (word && (previousWord === "def" || previousWord === "class")) add("tok-definition", token);
      else add("", token);
      if (word) previousWord = word;
      last = match.index + token.length;
    }
    if (last < text.length) add("", text.slice(last));
  }
  if (lines.length > 1 && lines[lines.length - 1].length === 0 && text.endsWith("\n")) lines.pop();
  return lines;
}

// -- call stack pane -------------------------------------------------------------------------------

function renderStack() {
  const frames = current.stack.map((frame, index) => {
    const innermost = index === current.stack.length - 1;
    // A frame with no step of its own (the <toplevel> frame before its first line) cannot be gone to.
    const reachable = frame.step >= 0;
    return el("li", {
      className: (innermost ? "frame current" : "frame") + (reachable ? "" : " unreachable"),
      dataset: { testid: "stack-frame", step: String(frame.step), call: String(frame.call) },
      title: reachable ? `go to step ${frame.step}` : "this frame has no step of its own",
      onclick: reachable ? () => move({ to: frame.step }) : undefined,
    },
    el("span", { className: "function", text: frame.function }),
    el("span", { className: "at", text: `${baseName(pathName(frame.path_id))}:${frame.line}` }),
    el("span", { className: "step", text: reachable ? `step ${frame.step}` : "no step" }));
  });
  $("stack").replaceChildren(...frames.reverse()); // innermost first, as debuggers show it
}

// -- locals pane -----------------------------------------------------------------------------------
//
// A value node: {type, text, kind, children: [[label, node], ...] | null, length}. What is expanded
// is remembered by path ("basket/items/0") so that it stays open while stepping.

const expanded = new Set();
const MAX_EXPANDED = 500;

function rememberExpanded(path, open) {
  if (open) {
    expanded.delete(path);
    expanded.add(path);
    while (expanded.size > MAX_EXPANDED) expanded.delete(expanded.values().next().value);
  } else {
    expanded.delete(path);
  }
}

function renderLocals() {
  const box = $("locals");
  if (current.locals.length === 0) {
    box.replaceChildren(el("li", { className: "empty", text: "no locals at this step" }));
    return;
  }
  box.replaceChildren(...current.locals.map((local) => valueItem(local.name, local.value, local.name, {
    changed: local.changed,
    onHistory: () => showHistory(current.index, local.name),
  })));
}

function valueItem(label, node, path, options = {}) {
  const hasChildren = Array.isArray(node.children) && node.children.length > 0;
  const item = el("li", {
    className: "value" + (options.changed ? " changed" : ""),
    dataset: { testid: options.onHistory ? "local" : "value", name: label, path },
  });
  const toggle = hasChildren
    ? el("button", { type: "button", className: "toggle", title: "show what it holds", "aria-expanded": "false", text: "▸" })
    : el("span", { className: "toggle-space" });
  const typeText = node.length !== null && node.length !== undefined ? `${node.type} · ${node.length}` : node.type;
  const row = el("div", { className: "row" },
    toggle,
    el("span", { className: "name", text: label }),
    el("span", { className: "equals", text: " = " }),
    el("span", { className: `text kind-${node.kind}`, text: node.text, title: node.text }),
    typeText ? el("span", { className: "type", text: typeText }) : null,
    options.onHistory
      ? el("button", { type: "button", className: "history-button", title: `history of ${label}`, text: "↺", dataset: { testid: "history-button" }, onclick: options.onHistory })
      : null);
  item.append(row);
  if (hasChildren) {
    const open = (isOpen) => {
      toggle.textContent = isOpen ? "▾" : "▸";
      toggle.setAttribute("aria-expanded", String(isOpen));
      item.classList.toggle("open", isOpen);
      const old = item.querySelector(":scope > ul");
      if (old) old.remove();
      if (isOpen) {
        item.append(el("ul", { className: "values" }, ...node.children.map(([childLabel, child]) =>
          valueItem(String(childLabel), child, `${path}/${childLabel}`))));
      }
      rememberExpanded(path, isOpen);
    };
    toggle.addEventListener("click", () => open(!item.classList.contains("open")));
    if (expanded.has(path)) open(true);
  }
  return item;
}

// -- history pane ----------------------------------------------------------------------------------

const HISTORY_LIMIT = 1000;
let historyShown = null; // the history shown: {call, changes, items (their elements)}
let historyAsked = 0; // which request is the latest: an earlier one answering late is dropped

// A variable's changes in its frame, at most HISTORY_LIMIT of them. Those up to the step it is asked
// at matter most (where the value in force came from): they are asked first, with `before`. When they
// all fit, the frame's first HISTORY_LIMIT changes are shown instead: those and what came after.
async function historyOf(stepIndex, name) {
  const route = `/api/history?i=${stepIndex}&name=${encodeURIComponent(name)}&limit=${HISTORY_LIMIT}`;
  const upToHere = await api(`${route}&before=${stepIndex}`);
  if (upToHere.cut) return { ...upToHere, earlierCut: true, laterCut: false };
  const fromStart = await api(route);
  return { ...fromStart, earlierCut: false, laterCut: fromStart.cut };
}

async function showHistory(stepIndex, name) {
  const box = $("history");
  const asked = ++historyAsked;
  $("history-name").textContent = name;
  box.replaceChildren(el("p", { className: "empty", text: "loading…" }));
  try {
    const history = await historyOf(stepIndex, name);
    if (asked !== historyAsked) return;
    const changes = history.changes;
    const items = changes.map((change, index) => el("li", {
      className: "change",
      dataset: { testid: "history-item", step: String(change.step) },
      title: `go to step ${change.step}`,
      onclick: () => move({ to: change.step }),
    },
    el("span", { className: "step", text: `step ${change.step}` }),
    el("span", { className: "at", text: `line ${change.line}` }),
    el("span", { className: "text", text: index === 0 && !history.earlierCut ? `${change.text} (first)` : change.text })));
    const plural = changes.length === 1 ? "change" : "changes";
    const count = history.earlierCut ? `the last ${changes.length} ${plural} up to step ${stepIndex}`
      : history.laterCut ? `the first ${changes.length} ${plural}` : `${changes.length} ${plural}`;
    const parts = [el("p", { className: "history-title", text: `${name} in call ${history.call}: ${count}` })];
    if (history.earlierCut) parts.push(el("p", { className: "empty", text: `earlier changes are not shown, nor any after step ${stepIndex}` }));
    if (changes.length === 0) parts.push(el("p", { className: "empty", text: `${name} never took a value in this frame` }));
    parts.push(el("ol", { className: "changes" }, ...items));
    if (history.laterCut) parts.push(el("p", { className: "empty", text: "later changes are not shown" }));
    box.replaceChildren(...parts);
    historyShown = { call: history.call, changes, items };
    markHistory();
  } catch (error) {
    if (asked !== historyAsked) return;
    historyShown = null;
    box.replaceChildren(el("p", { className: "error-line", text: `history of ${name}: ${error.message}` }));
  }
}

// In the history shown, the change in force at the current step (when it is in the same call),
// scrolled into view.
function markHistory() {
  if (historyShown === null || current === null) return;
  let inForce = -1;
  if (current.call === historyShown.call) {
    historyShown.changes.forEach((change, index) => {
      if (change.step <= current.index) inForce = index;
    });
  }
  historyShown.items.forEach((item, index) => item.classList.toggle("current", index === inForce));
  if (inForce >= 0) scrollIntoViewIfHidden($("history"), historyShown.items[inForce]);
}

// -- call tree pane --------------------------------------------------------------------------------
//
// The root is call 0; the children of a call are fetched when it is opened, a page at a time.

const TREE_PAGE = 100;
let treeBuiltIncomplete = false;
let treeLoaded = Promise.resolve(); // the latest loadTree: "show current call" waits for it

function startTreeLoad() {
  treeLoaded = loadTree();
  treeLoaded.catch((error) => showError(new Error(`call tree: ${error.message}`)));
}

async function loadTree() {
  treeBuiltIncomplete = !trace.complete;
  const root = await api("/api/call?c=0");
  const item = callItem(root);
  $("tree").replaceChildren(item);
  await item.openCall();
  markCurrentCall();
}

function callItem(call) {
  const item = el("li", { className: "call", dataset: { testid: "tree-call", call: String(call.call), function: call.function } });
  const toggle = call.children > 0
    ? el("button", { type: "button", className: "toggle", title: `${call.children} call${call.children === 1 ? "" : "s"} made`, "aria-expanded": "false", text: "▸" })
    : el("span", { className: "toggle-space" });
  const several = trace.threads && trace.threads.length > 1;
  const label = el("span", {
    className: "label",
    title: `go to step ${call.first_step} (steps ${call.first_step}–${call.last_step})`,
    onclick: () => move({ to: call.first_step }),
  },
  el("span", { className: "function", text: call.function }),
  el("span", { className: "args", text: `(${call.args})` }),
  returnOf(call),
  several ? el("span", { className: "thread-tag", text: `thread ${call.thread}` }) : null);
  item.append(el("div", { className: "row" }, toggle, label));

  // item.childList: the <ul> of the children loaded so far, made at the first opening.
  item.childList = null;
  const showOpen = (open) => {
    item.classList.toggle("open", open);
    item.childList.hidden = !open;
    toggle.textContent = open ? "▾" : "▸";
    toggle.setAttribute("aria-expanded", String(open));
  };
  item.openCall = async () => {
    if (call.children === 0) return;
    if (item.childList === null) {
      item.childList = el("ul", { className: "tree" });
      item.append(item.childList);
      showOpen(true);
      await loadChildren(call.call, item.childList, 0);
    } else {
      showOpen(true);
    }
  };
  if (call.children > 0) {
    toggle.addEventListener("click", async () => {
      if (item.childList !== null && item.classList.contains("open")) {
        showOpen(false);
        return;
      }
      try {
        await item.openCall();
        markCurrentCall();
      } catch (error) {
        showError(error);
      }
    });
  }
  return item;
}

// A call with no return either never returned (it raised, or the program ended in it) or, while the
// server is still reading, returns later in the trace.
function returnOf(call) {
  if (call.return !== null && call.return !== undefined) return el("span", { className: "return", text: ` → ${call.return}` });
  if (!trace.complete) return el("span", { className: "return none", text: " → …", title: "not read yet" });
  return el("span", { className: "return none", text: " ↛ no return", title: "this call never returned" });
}

async function loadChildren(parent, list, offset) {
  const answer = await api(`/api/calls?parent=${parent}&offset=${offset}&limit=${TREE_PAGE}`);
  for (const child of answer.calls) list.append(callItem(child));
  const shown = offset + answer.calls.length;
  if (shown < answer.total) {
    const more = el("li", {
      className: "more",
      dataset: { testid: "tree-more" },
      text: `more… (${answer.total - shown} more call${answer.total - shown === 1 ? "" : "s"})`,
    });
    more.loadMore = async () => {
      more.remove();
      await loadChildren(parent, list, shown);
    };
    more.addEventListener("click", () => more.loadMore().then(markCurrentCall, showError), { once: true });
    list.append(more);
  }
}

// Open the tree down to the current call, along the stack (each frame's call is the parent of the
// next), paging through at most REVEAL_PAGES pages of children at each level.
const REVEAL_PAGES = 20;

async function revealCurrentCall() {
  await treeLoaded.catch(() => {}); // a click as the page opens: the tree's root may not be there yet
  if (current === null || current.stack.length === 0) return;
  const tree = $("tree");
  let item = tree.querySelector(`.call[data-call="${current.stack[0].call}"]`);
  for (const frame of current.stack.slice(1)) {
    if (!item) break;
    await item.openCall();
    const childOf = () => [...item.childList.children].find((child) => child.dataset.call === String(frame.call));
    let child = childOf();
    for (let pages = 0; !child && pages < REVEAL_PAGES; pages += 1) {
      const more = item.childList.querySelector(":scope > .more");
      if (!more) break;
      await more.loadMore();
      child = childOf();
    }
    item = child;
  }
  markCurrentCall();
  if (item) scrollIntoViewIfHidden(tree, item.querySelector(".row"));
  else flashNotice("reveal", "the current call is too far down its parent's calls to be shown");
}

function markCurrentCall() {
  const tree = $("tree");
  for (const old of tree.querySelectorAll(".call.current, .call.on-stack")) old.classList.remove("current", "on-stack");
  if (current === null) return;
  for (const frame of current.stack) {
    const item = tree.querySelector(`.call[data-call="${frame.call}"]`);
    if (item) item.classList.add(frame.call === current.call ? "current" : "on-stack");
  }
}

// -- output pane -----------------------------------------------------------------------------------
//
// The items written up to the current step are items 0 .. output_count-1. The pane shows the last
// `outputWindow` of them, fetched in pages of OUTPUT_PAGE items kept in a small cache; "load
// earlier" widens the window.

const OUTPUT_PAGE = 200;
const OUTPUT_MAX_WINDOW = 5000;
const OUTPUT_TEXT_LIMIT = 20000; // characters of one item shown
const outputPages = new BoundedCache(Math.ceil(OUTPUT_MAX_WINDOW / OUTPUT_PAGE) + 2);
let outputWindow = OUTPUT_PAGE;

async function outputPage(page) {
  let items = outputPages.get(page);
  if (items === undefined) {
    const answer = await api(`/api/output?offset=${page * OUTPUT_PAGE}&limit=${OUTPUT_PAGE}`);
    items = answer.items;
    // A page read before the server had read it all may lack items: keep only a full one.
    if (items.length === OUTPUT_PAGE || trace.complete) outputPages.set(page, items);
  }
  return items;
}

async function outputItems(start, end) {
  const pages = [];
  for (let page = Math.floor(start / OUTPUT_PAGE); page * OUTPUT_PAGE < end; page += 1) pages.push(outputPage(page));
  const items = (await Promise.all(pages)).flat();
  return items.filter((item) => item.index >= start && item.index < end);
}

// `scrollTo: "top"` after "load earlier" (to see what came in); else the latest, at the bottom.
async function renderOutput({ scrollTo = "bottom" } = {}) {
  const count = current.output_count;
  const shownFor = current.index;
  const start = Math.max(0, count - outputWindow);
  const items = await outputItems(start, count);
  if (current === null || current.index !== shownFor) return; // moved on while fetching
  const box = $("output");
  $("output-count").textContent = count === 1 ? "1 item so far" : `${count} items so far`;
  const parts = [];
  if (start > 0) {
    const canWiden = outputWindow < OUTPUT_MAX_WINDOW;
    parts.push(el("button", {
      type: "button",
      className: "load-earlier",
      id: "output-earlier",
      dataset: { testid: "output-earlier" },
      text: canWiden ? `load earlier (${start} before)` : `${start} earlier items not shown`,
      disabled: canWiden ? undefined : "disabled",
      onclick: () => {
        outputWindow = Math.min(OUTPUT_MAX_WINDOW, outputWindow + OUTPUT_PAGE);
        drawPane("output", () => renderOutput({ scrollTo: "top" }));
      },
    }));
  }
  if (count === 0) parts.push(el("p", { className: "empty", text: "no output yet" }));
  const text = el("pre", { className: "stream" });
  for (const item of items) {
    const shown = item.text.length > OUTPUT_TEXT_LIMIT ? item.text.slice(0, OUTPUT_TEXT_LIMIT) + "…" : item.text;
    text.append(el("span", {
      className: `output-item ${item.stream}` + (item.step === current.index ? " at-step" : ""),
      dataset: { testid: "output-item", step: String(item.step), stream: item.stream, index: String(item.index) },
      title: `${item.stream}, written at step ${item.step}: click to go there`,
      text: shown,
      onclick: () => move({ to: item.step }),
    }));
  }
  parts.push(text);
  box.replaceChildren(...parts);
  box.scrollTop = scrollTo === "top" ? 0 : box.scrollHeight;
}

// -- controls --------------------------------------------------------------------------------------

const BUTTONS = {
  "btn-first": { to: 0 },
  "btn-prev": { by: -1 },
  "btn-next": { by: 1 },
  "btn-over": { how: "over" },
  "btn-back-over": { how: "back_over" },
  "btn-out": { how: "out" },
  "btn-back-out": { how: "back_out" },
  "btn-next-call": { how: "next_call" },
  "btn-prev-call": { how: "prev_call" },
};

function moveToLast() {
  if (trace.complete) {
    move({ to: lastStep() });
  } else {
    refreshTrace().then(() => move({ to: lastStep() }), showError);
  }
}

// The key table of docs/view.md.
function moveOfKey(event) {
  if (event.ctrlKey || event.altKey || event.metaKey) return null;
  switch (event.key) {
    case "ArrowRight": return { by: 1 };
    case "ArrowLeft": return { by: -1 };
    case "ArrowDown": return { how: event.shiftKey ? "out" : "over" };
    case "ArrowUp": return { how: event.shiftKey ? "back_out" : "back_over" };
    case "n": return { how: "next_call" };
    case "p": return { how: "prev_call" };
    case "Home": return { to: 0 };
    case "End": return { last: true };
    default: return null;
  }
}

function onKey(event) {
  const target = event.target;
  // Typing in a text field is typing; the slider, though, moves like the rest of the page.
  if (target instanceof HTMLInputElement && target.type !== "range") return;
  if (target instanceof HTMLTextAreaElement || (target instanceof HTMLElement && target.isContentEditable)) return;
  const request = moveOfKey(event);
  if (request === null || trace === null) return;
  event.preventDefault();
  if (request.last) moveToLast();
  else move(request);
}

function wireControls() {
  for (const [id, request] of Object.entries(BUTTONS)) $(id).addEventListener("click", () => trace && move(request));
  $("btn-last").addEventListener("click", () => trace && moveToLast());
  $("slider").addEventListener("input", (event) => move({ to: Number(event.target.value) }));
  $("error-close").addEventListener("click", hideError);
  $("tree-reveal").addEventListener("click", () => revealCurrentCall().catch(showError));
  document.addEventListener("keydown", onKey);
  window.addEventListener("hashchange", () => {
    const step = stepFromHash();
    if (step !== null && (current === null || step !== current.index)) move({ to: step });
  });
}

// -- start -----------------------------------------------------------------------------------------

async function start() {
  try {
    await loadTrace();
  } catch (error) {
    showError(error);
    $("source").replaceChildren(el("p", { className: "empty", text: "Could not read the trace's header." }));
    setTimeout(start, 2000); // perhaps the server was not up yet
    return;
  }
  startTreeLoad();
  if (trace.complete && trace.steps === 0) {
    $("source").replaceChildren(el("p", { className: "empty", text: "This trace has no steps." }));
    return;
  }
  move({ to: stepFromHash() ?? 0 });
}

let started = false;
function startOnce() {
  if (started) return;
  started = true;
  wireControls();
  start();
}

if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", startOnce);
else startOnce();
