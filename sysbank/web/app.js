// SysBank browser page: talks only to this server's /api/ (no external resources).
"use strict";

const $ = (id) => document.getElementById(id);
const state = { selected: null, timer: null, seq: 0 };

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  return node;
}

// The query as a JS RegExp for highlighting (null when it cannot be one; the server still searched).
function queryPattern() {
  const q = $("q").value;
  if (!q) return null;
  try {
    return $("regex").checked ? new RegExp(q, "gim") : new RegExp(q.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"), "gi");
  } catch (err) {
    return null;
  }
}

// Text with every [start, end) range wrapped in <mark class=cls>, built from text nodes only.
function marked(text, ranges, cls) {
  const frag = document.createDocumentFragment();
  let pos = 0;
  for (const [start, end] of ranges.sort((a, b) => a[0] - b[0])) {
    if (start < pos) continue;
    frag.append(text.slice(pos, start), el("mark", { class: cls }, text.slice(start, end)));
    pos = end;
  }
  frag.append(text.slice(pos));
  return frag;
}

function hitRanges(text, pattern) {
  if (!pattern) return [];
  const ranges = [];
  pattern.lastIndex = 0;
  for (const m of text.matchAll(pattern)) if (m[0].length) ranges.push([m.index, m.index + m[0].length]);
  return ranges;
}

const withHits = (text, pattern) => marked(text, hitRanges(text, pattern), "hit");

function params() {
  const p = new URLSearchParams();
  for (const id of ["q", "source", "language", "category", "min", "max"]) if ($(id).value) p.set(id, $(id).value);
  if ($("regex").checked) p.set("regex", "1");
  p.set("limit", "200");
  return p;
}

async function getJSON(url) {
  const res = await fetch(url);
  const body = await res.json();
  if (!res.ok) throw new Error(body.error || res.statusText);
  return body;
}

// The status line: plain text, "busy" (a spinner while a search runs) or "error".
function setStatus(text, kind = "") {
  $("status").textContent = text;
  $("status").className = kind;
}

async function runSearch() {
  const seq = ++state.seq;
  setStatus("Searching…", "busy");
  let data;
  try {
    data = await getJSON("/api/search?" + params());
  } catch (err) {
    if (seq === state.seq) setStatus(`Search not run: ${err.message}`, "error");
    return;
  }
  if (seq !== state.seq) return; // a newer search has started
  const pattern = queryPattern();
  const list = $("result-list");
  list.replaceChildren();
  for (const item of data.items) {
    const li = el("li", { dataset: { id: item.id } },
      el("div", { class: "row-name" }, withHits(item.name, pattern)),
      el("div", { class: "row-meta" }, `${item.id} · ${item.source || "-"} · ${item.language} · ${item.n_constraints} constraints`));
    if (item.id === state.selected) li.classList.add("selected");
    li.addEventListener("click", () => openProfile(item.id));
    list.append(li);
  }
  const shown = data.items.length < data.total ? ` (showing ${data.items.length})` : "";
  setStatus(`${data.total} prompt${data.total === 1 ? "" : "s"}${shown}`);
}

function scheduleSearch() {
  clearTimeout(state.timer);
  state.timer = setTimeout(runSearch, 150);
}

function constraintItem(text, tags, pattern) {
  const li = el("li", { class: "constraint", dataset: { categories: tags.join(" ") } },
    el("span", { class: `text cat-${tags[0]}` }, withHits(text, pattern)));
  for (const tag of tags) li.append(el("span", { class: `tag cat-${tag}` }, tag));
  return li;
}

// The flat system prompt with each constraint's text marked where it occurs.
function promptView(prompt, constraints) {
  const ranges = [];
  for (const c of constraints) {
    const at = prompt.indexOf(c);
    if (at >= 0) ranges.push([at, at + c.length]);
  }
  return el("pre", { class: "prompt" }, marked(prompt, ranges, "constraint-mark"));
}

async function openProfile(id) {
  let p;
  try {
    p = await getJSON("/api/profile?id=" + encodeURIComponent(id));
  } catch (err) {
    setStatus(`Prompt not opened: ${err.message}`, "error");
    return;
  }
  state.selected = id;
  history.replaceState(null, "", "#id=" + encodeURIComponent(id));
  for (const li of $("result-list").children) li.classList.toggle("selected", li.dataset.id === id);
  const pattern = queryPattern();
  const detail = $("detail");
  detail.replaceChildren(
    el("h2", { id: "detail-name" }, withHits(p.name, pattern)),
    el("div", {}, el("span", { class: "badge" }, p.id), el("span", { class: "badge" }, p.source || "-"),
      el("span", { class: "badge" }, p.language), el("span", { class: "badge" }, p.gen_model || "-")));
  if (p.description) detail.append(el("h3", {}, "Description"), el("p", {}, withHits(p.description, pattern)));
  if (p.skills.length) {
    const skills = el("ul", { class: "skills" });
    for (const s of p.skills) skills.append(el("li", {}, withHits(s, pattern)));
    detail.append(el("h3", {}, "Skills"), skills);
  }
  const list = el("ol", { class: "constraints", id: "constraint-list" });
  p.constraints.forEach((c, i) => list.append(constraintItem(c, p.constraint_categories[i], pattern)));
  detail.append(el("h3", {}, `Constraints (${p.constraints.length})`), list);
  if (p.system_prompt) detail.append(el("h3", {}, "System prompt"), promptView(p.system_prompt, p.constraints));
  detail.append(el("p", { class: "hint" }, `from ${p.location}`));
}

async function init() {
  const meta = await getJSON("/api/meta");
  for (const [id, values] of [["source", meta.sources], ["language", meta.languages], ["category", meta.categories]]) {
    for (const v of values) $(id).append(el("option", { value: v }, v));
  }
  for (const id of ["q", "min", "max"]) $(id).addEventListener("input", scheduleSearch);
  for (const id of ["regex", "source", "language", "category"]) $(id).addEventListener("change", runSearch);
  await runSearch();
  openFromHash();
  window.addEventListener("hashchange", openFromHash);
}

// `#id=ID` links straight to one prompt.
function openFromHash() {
  const m = location.hash.match(/^#id=(.+)$/);
  if (m && decodeURIComponent(m[1]) !== state.selected) openProfile(decodeURIComponent(m[1]));
}

init().catch((err) => setStatus(`The page could not start: ${err.message}`, "error"));
