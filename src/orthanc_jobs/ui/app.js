// The dashboard of the cluster's jobs: servers, jobs, live updates, actions and a chart.
// Plain JavaScript, no library, no build step; every request is same-origin and carries the browser's
// Basic credentials.
"use strict";

/** Where Orthanc's REST API is, from the root of the load balancer. */
const ORTHANC_PREFIX = "/orthanc";
/** Where the job-service's own routes are, from the root of the load balancer. */
const SERVICE_PREFIX = "/orthanc-jobs";

const STATES = ["Pending", "Running", "Paused", "Retry", "Success", "Failure"];
const UNFINISHED = new Set(["Pending", "Running", "Paused", "Retry"]);
const TERMINAL = new Set(["Success", "Failure"]);
const PAGE_SIZES = [10, 25, 50, 100];
const KNOWN_TYPES = [
  "Archive", "Media", "ResourceModification", "MergeStudy", "SplitStudy", "DicomModalityStore",
  "DicomMoveScu", "OrthancPeerStore", "StorageCommitmentScp",
];
const ARCHIVE_TYPES = new Set(["Archive", "Media"]);
const JOB_ID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
// Which action Orthanc accepts in which state (the others answer 400).
const ACTIONS = {
  pause: new Set(["Pending", "Running", "Retry"]),
  resume: new Set(["Paused"]),
  cancel: new Set(["Pending", "Running", "Paused", "Retry"]),
  resubmit: new Set(["Failure"]),
};
const ACTION_DONE = { pause: "Paused.", resume: "Resumed.", cancel: "Cancelled.", resubmit: "Resubmitted." };
// Reloads caused by events are grouped: at most one list request per this many milliseconds.
const RELOAD_INTERVAL_MS = 2000;
// A job changed state: its server's counts did too. Without a `server` event by then, they are read.
const SERVER_CHECK_MS = 1000;
// Jobs whose last state the page remembers (to tell state changes from progress); beyond, it forgets.
const MAX_REMEMBERED_STATES = 50000;
const STATS_DELAY_MS = 3000;
const STATS_REFRESH_MS = 60000;

// The page is served at <load balancer>/orthanc-jobs/ui/: everything else is found from there.
const ROOT = (() => {
  const path = window.location.pathname;
  const at = path.lastIndexOf(SERVICE_PREFIX + "/ui");
  return at >= 0 ? path.slice(0, at) : "";
})();
const ORTHANC = ROOT + ORTHANC_PREFIX;
const SERVICE = ROOT + SERVICE_PREFIX;

const $ = (selector) => document.querySelector(selector);

// ---------------------------------------------------------------------------------------------------
// State of the page

/** What the jobs table shows; mirrored in the address (#status=Running&page=2...). */
const view = { status: "", type: "", server: "", sort: "desc", limit: 25, page: 0, job: "" };
let total = 0; // jobs matching the filters (X-Total-Count)
let rows = []; // jobs of the current page, in display order
const rowElements = new Map(); // job id -> <tr>
const servers = new Map(); // server URL -> entry of /orthanc-jobs/servers
const lastStates = new Map(); // job id -> last state seen (events, lists)
const seenTypes = new Set(KNOWN_TYPES);
let detailJob = null; // the job shown in the detail dialog
let detailOpener = null;
let jobsRequest = 0; // increases with every list request: late answers of older ones are dropped
let reloadTimer = null;
let lastReload = 0;
let statsTimer = null;
let lastStats = null;
const serverChecks = new Map(); // server URL -> time a job of it changed state
let serverCheckTimer = null;
const problems = new Map();

// ---------------------------------------------------------------------------------------------------
// Small helpers

class ApiError extends Error {
  constructor(message, status, body) {
    super(message);
    this.status = status;
    this.body = body;
  }
}

/** A JSON request; errors carry the API's own Message. */
async function request(url, options = {}) {
  const response = await fetch(url, {
    credentials: "same-origin",
    cache: "no-store",
    ...options,
    headers: { Accept: "application/json", ...(options.headers || {}) },
  });
  const text = await response.text();
  let body = null;
  if (text) {
    try {
      body = JSON.parse(text);
    } catch {
      body = text;
    }
  }
  if (!response.ok) {
    const message = body && typeof body === "object" && body.Message
      ? body.Message
      : `${response.status} ${response.statusText || "error"}`.trim();
    throw new ApiError(message, response.status, body);
  }
  return { body, response };
}

function element(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "class") node.className = value;
    else if (name === "text") node.textContent = value;
    else if (name === "dataset") Object.assign(node.dataset, value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

const SVG_NS = "http://www.w3.org/2000/svg";
function svg(tag, attributes = {}, text) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, String(value));
  if (text !== undefined) node.textContent = text;
  return node;
}

/** Orthanc's timestamps ("20240131T154500.123456", UTC) as a Date. */
function parseOrthancTime(value) {
  const match = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})(?:\.(\d+))?$/.exec(value || "");
  if (!match) return null;
  const [, year, month, day, hour, minute, second, fraction = "0"] = match;
  const ms = Math.round(Number(`0.${fraction}`) * 1000);
  return new Date(Date.UTC(+year, +month - 1, +day, +hour, +minute, +second, ms));
}

const pad = (number) => String(number).padStart(2, "0");

function formatDate(date) {
  if (!date) return "";
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())} ` +
    `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}`;
}

function formatClock(date) {
  return `${pad(date.getHours())}:${pad(date.getMinutes())}`;
}

/** A time cell: local time shown, UTC in the tooltip and in a machine-readable attribute. */
function timeElement(value) {
  const date = parseOrthancTime(value);
  if (!date) return element("span", { class: "muted", text: "—" });
  return element("time", { datetime: date.toISOString(), title: `${date.toISOString()} (UTC)` }, formatDate(date));
}

function stateBadge(state) {
  return element("span", { class: `badge state-${String(state).toLowerCase()}`, text: state });
}

function statusBadge(status) {
  const labels = { alive: "alive", "not-responding": "not responding", stopped: "stopped" };
  return element("span", { class: `status status-${status}` },
    element("span", { class: "dot", "aria-hidden": "true" }), labels[status] || status || "unknown");
}

function progressBar(value, label) {
  const percent = Math.max(0, Math.min(100, Number(value) || 0));
  const bar = element("div", {
    class: "progress", role: "progressbar", "aria-valuemin": 0, "aria-valuemax": 100,
    "aria-valuenow": percent, "aria-label": label,
  }, element("div", { class: "progress-fill" }));
  bar.firstChild.style.width = `${percent}%`;
  return element("div", { class: "progress-cell" }, bar, element("span", { class: "pct", text: `${percent} %` }));
}

/** Moves an existing progress bar (so that it glides); false if there is none. */
function setProgress(container, value) {
  const bar = container.querySelector(".progress");
  if (!bar) return false;
  const percent = Math.max(0, Math.min(100, Number(value) || 0));
  bar.setAttribute("aria-valuenow", String(percent));
  bar.firstChild.style.width = `${percent}%`;
  container.querySelector(".pct").textContent = `${percent} %`;
  return true;
}

function setProblem(key, message) {
  if (message) problems.set(key, message);
  else problems.delete(key);
  const banner = $("#banner");
  banner.hidden = problems.size === 0;
  $("#banner-text").textContent = [...problems.values()].join(" · ");
}

// ---------------------------------------------------------------------------------------------------
// The address: filters, order, page and the open job survive a reload and can be shared

function readHash() {
  const params = new URLSearchParams(window.location.hash.replace(/^#/, ""));
  const status = params.get("status") || "";
  view.status = STATES.find((state) => state.toLowerCase() === status.toLowerCase()) || "";
  view.type = params.get("type") || "";
  view.server = params.get("server") || "";
  view.sort = params.get("sort") === "asc" ? "asc" : "desc";
  const limit = Number(params.get("limit"));
  view.limit = PAGE_SIZES.includes(limit) ? limit : 25;
  view.page = Math.max(0, (parseInt(params.get("page") || "1", 10) || 1) - 1);
  const job = params.get("job") || "";
  view.job = JOB_ID.test(job) ? job : "";
}

function writeHash() {
  const params = new URLSearchParams();
  if (view.status) params.set("status", view.status);
  if (view.type) params.set("type", view.type);
  if (view.server) params.set("server", view.server);
  if (view.sort !== "desc") params.set("sort", view.sort);
  if (view.limit !== 25) params.set("limit", String(view.limit));
  if (view.page > 0) params.set("page", String(view.page + 1));
  if (view.job) params.set("job", view.job);
  const hash = params.toString();
  const url = window.location.pathname + window.location.search + (hash ? `#${hash}` : "");
  window.history.replaceState(null, "", url);
}

function syncControls() {
  $("#filter-status").value = view.status;
  $("#filter-type").value = view.type;
  ensureServerOption(view.server);
  $("#filter-server").value = view.server;
  $("#sort").value = view.sort;
  $("#limit").value = String(view.limit);
  const descending = view.sort === "desc";
  $("#created-header").setAttribute("aria-sort", descending ? "descending" : "ascending");
  $("#sort-arrow").textContent = descending ? "↓" : "↑";
  $("#sort-toggle").title = descending ? "Newest first; click for oldest first" : "Oldest first; click for newest first";
}

/** Changes the view (filters, order, page) and loads the matching jobs. */
function changeView(changes) {
  Object.assign(view, changes);
  writeHash();
  syncControls();
  loadJobs();
}

// ---------------------------------------------------------------------------------------------------
// Servers: the cluster overview

async function loadServers() {
  try {
    const { body } = await request(`${SERVICE}/servers`);
    servers.clear();
    for (const entry of body) servers.set(entry.Url, entry);
    serverChecks.clear();
    setProblem("servers", null);
  } catch (error) {
    setProblem("servers", `Servers could not be read: ${error.message}`);
  }
  renderServers();
}

function countButton(entry, state, count) {
  if (!count) return element("span", { class: "zero", text: "0" });
  const button = element("button", {
    type: "button", class: "count-link", text: String(count),
    "aria-label": `Show the ${count} ${state} job${count === 1 ? "" : "s"} of ${entry.Name}`,
  });
  button.addEventListener("click", () => {
    changeView({ server: entry.Name, status: state, page: 0 });
    $("#jobs-heading").focus();
  });
  return button;
}

function renderServers() {
  const body = $("#servers-body");
  const entries = [...servers.values()].sort((a, b) => a.Name.localeCompare(b.Name) || a.Url.localeCompare(b.Url));
  const totals = Object.fromEntries(STATES.map((state) => [state, 0]));
  const columns = ["Pending", "Running", "Paused", "Retry", "Success", "Failure"];
  body.replaceChildren();
  if (!entries.length) {
    body.append(element("tr", { class: "placeholder" },
      element("td", { colspan: 9, text: "No Orthanc server has registered yet." })));
  }
  for (const entry of entries) {
    const jobs = entry.Jobs || {};
    let sum = 0;
    const name = element("button", {
      type: "button", class: "server-name", text: entry.Name,
      "aria-label": `Show the jobs of ${entry.Name}`,
    });
    name.addEventListener("click", () => {
      changeView({ server: entry.Name, status: "", page: 0 });
      $("#jobs-heading").focus();
    });
    const lastSeen = parseOrthancTime(entry.LastSeen);
    const status = statusBadge(entry.Status);
    status.title = lastSeen ? `Last heard of at ${formatDate(lastSeen)}` : "";
    const cells = columns.map((state) => {
      const count = Number(jobs[state] || 0);
      sum += count;
      totals[state] += count;
      return element("td", { class: "num" }, countButton(entry, state, count));
    });
    body.append(element("tr", { dataset: { server: entry.Name, url: entry.Url, status: entry.Status } },
      element("th", { scope: "row" }, name, element("div", { class: "url", text: entry.Url })),
      element("td", {}, status,
        entry.OrthancVersion ? element("div", { class: "version", text: `Orthanc ${entry.OrthancVersion}` }) : null),
      ...cells,
      element("td", { class: "num total", text: String(sum) })));
  }
  const grand = STATES.reduce((sum, state) => sum + totals[state], 0);
  $("#servers-foot").replaceChildren(element("tr", {},
    element("th", { scope: "row", text: "All servers" }),
    element("td", {}, `${entries.filter((e) => e.Status === "alive").length} of ${entries.length} alive`),
    ...columns.map((state) => element("td", { class: "num", text: String(totals[state]) })),
    element("td", { class: "num total", text: String(grand) })));
  const unfinished = totals.Running + totals.Pending + totals.Paused + totals.Retry;
  $("#summary").textContent = `${entries.length} server${entries.length === 1 ? "" : "s"} · ${grand} jobs · ` +
    `${totals.Running} running · ${unfinished - totals.Running} waiting · ${totals.Failure} failed`;
  renderServerOptions();
}

function renderServerOptions() {
  const select = $("#filter-server");
  const names = [...new Set([...servers.values()].map((entry) => entry.Name))].sort();
  if (view.server && !names.includes(view.server)) names.push(view.server);
  const current = [...select.options].slice(1).map((option) => option.value);
  if (current.join("\n") === names.join("\n")) return;
  select.replaceChildren(element("option", { value: "", text: "All servers" }),
    ...names.map((name) => element("option", { value: name, text: name })));
  select.value = view.server;
}

function ensureServerOption(name) {
  const select = $("#filter-server");
  if (name && ![...select.options].some((option) => option.value === name)) {
    select.append(element("option", { value: name, text: name }));
  }
}

/** A job changed state: its server's counts changed. If no `server` event says so soon, read them. */
function expectServerUpdate(url) {
  if (!url) return;
  if (!serverChecks.has(url)) serverChecks.set(url, Date.now());
  if (serverCheckTimer) return;
  serverCheckTimer = setTimeout(() => {
    serverCheckTimer = null;
    if (serverChecks.size) loadServers();
  }, SERVER_CHECK_MS);
}

// ---------------------------------------------------------------------------------------------------
// Jobs: the table

function filterParams() {
  const params = new URLSearchParams();
  params.set("expand", "");
  if (view.status) params.set("status", view.status);
  if (view.type) params.set("type", view.type);
  if (view.server) params.set("server", view.server);
  return params;
}

function matches(job) {
  if (view.status && job.State !== view.status) return false;
  if (view.type && String(job.Type).toLowerCase() !== view.type.toLowerCase()) return false;
  if (view.server) {
    const owner = job.Server || {};
    if (owner.Name !== view.server && owner.Url !== view.server) return false;
  }
  return true;
}

async function fetchPage(offset, limit) {
  const params = filterParams();
  params.set("offset", String(offset));
  params.set("limit", String(limit));
  const { body, response } = await request(`${ORTHANC}/jobs?${params}`);
  const count = Number(response.headers.get("X-Total-Count"));
  const jobs = Array.isArray(body) ? body : [];
  return { jobs, total: response.headers.has("X-Total-Count") && Number.isFinite(count) ? count : jobs.length };
}

/** Reads the current page. Newest first is the end of the API's (creation-ascending) order, reversed. */
async function loadJobs() {
  const ticket = ++jobsRequest;
  lastReload = Date.now();
  if (reloadTimer) {
    clearTimeout(reloadTimer);
    reloadTimer = null;
  }
  const table = $("#jobs");
  table.setAttribute("aria-busy", "true");
  try {
    let page;
    if (view.sort === "asc") {
      page = await fetchPage(view.page * view.limit, view.limit);
    } else {
      let known = total;
      for (let attempt = 0; attempt < 3; attempt += 1) {
        const end = Math.max(0, known - view.page * view.limit);
        const offset = Math.max(0, end - view.limit);
        page = await fetchPage(offset, end - offset);
        if (page.total === known) break;
        known = page.total; // jobs came or went meanwhile: ask again with the new total
      }
      page.jobs.reverse();
    }
    if (ticket !== jobsRequest) return;
    total = page.total;
    const lastPage = Math.max(0, Math.ceil(total / view.limit) - 1);
    if (view.page > lastPage) { // fewer jobs than the page asked for: show the last one
      view.page = lastPage;
      writeHash();
      loadJobs();
      return;
    }
    renderJobs(page.jobs);
    setProblem("jobs", null);
  } catch (error) {
    if (ticket !== jobsRequest) return;
    setProblem("jobs", `Jobs could not be read: ${error.message}`);
    if (!rows.length) {
      $("#jobs-body").replaceChildren(element("tr", { class: "placeholder" },
        element("td", { colspan: 7, text: "The jobs could not be read." })));
    }
  } finally {
    if (ticket === jobsRequest) table.removeAttribute("aria-busy");
  }
}

/** Several events in a row ask for one reload, at most every RELOAD_INTERVAL_MS. */
function scheduleReload() {
  if (reloadTimer) return;
  const wait = Math.max(200, RELOAD_INTERVAL_MS - (Date.now() - lastReload));
  reloadTimer = setTimeout(() => {
    reloadTimer = null;
    loadJobs();
  }, wait);
}

function renderJobs(jobs) {
  rows = jobs.slice();
  rowElements.clear();
  const body = $("#jobs-body");
  body.replaceChildren();
  for (const job of rows) {
    noteJob(job);
    body.append(makeRow(job));
  }
  if (!rows.length) {
    const filtered = view.status || view.type || view.server;
    body.append(element("tr", { class: "placeholder" },
      element("td", { colspan: 7, text: filtered ? "No job matches these filters." : "No job in the cluster yet." })));
  }
  renderPager();
  renderTypes();
}

function noteJob(job) {
  if (lastStates.size >= MAX_REMEMBERED_STATES && !lastStates.has(job.ID)) lastStates.clear();
  lastStates.set(job.ID, job.State);
  if (job.Type && !seenTypes.has(job.Type)) {
    seenTypes.add(job.Type);
    renderTypes();
  }
}

function renderTypes() {
  const list = $("#known-types");
  if (list.options.length === seenTypes.size) return;
  list.replaceChildren(...[...seenTypes].sort().map((type) => element("option", { value: type })));
}

function makeRow(job) {
  const open = element("button", {
    type: "button", class: "job-link", text: job.ID, "aria-label": `Open job ${job.ID}`,
  });
  open.addEventListener("click", (event) => {
    event.stopPropagation();
    openDetail(job.ID, open);
  });
  const tr = element("tr", { dataset: { jobId: job.ID } }, element("td", { class: "id" }, open));
  for (let i = 0; i < 6; i += 1) tr.append(element("td"));
  tr.addEventListener("click", (event) => {
    if (event.target.closest("button, a")) return;
    if (window.getSelection && String(window.getSelection())) return; // selecting text, e.g. to copy an id
    openDetail(job.ID, open);
  });
  fillRow(tr, job);
  rowElements.set(job.ID, tr);
  return tr;
}

/** Writes a job into its row (everything but the id), so that live updates keep the row in place. */
function fillRow(tr, job) {
  const [, type, owner, state, progress, created, completed] = tr.cells;
  tr.dataset.state = job.State;
  tr.dataset.type = job.Type || "";
  tr.dataset.server = (job.Server && job.Server.Name) || "";
  tr.classList.toggle("stale", !matches(job));
  type.textContent = job.Type || "";
  const server = job.Server || {};
  const ownerChildren = [element("span", { text: server.Name || server.Url || "?" })];
  if (server.Status && server.Status !== "alive") {
    ownerChildren.push(" ", element("span", { class: `tag status-${server.Status}`, text: server.Status.replace("-", " ") }));
  }
  if (server.HistoryOnly) {
    ownerChildren.push(" ", element("span", {
      class: "tag", text: "history", title: "Its server no longer holds this job: read from the history, outputs gone",
    }));
  }
  owner.replaceChildren(...ownerChildren);
  state.replaceChildren(stateBadge(job.State));
  if (UNFINISHED.has(job.State)) {
    if (!setProgress(progress, job.Progress)) {
      progress.replaceChildren(progressBar(job.Progress, `Progress of job ${job.ID}`));
    }
  } else if (job.State === "Failure") {
    const text = job.ErrorDescription || `error ${job.ErrorCode}`;
    progress.replaceChildren(element("span", { class: "error-text", text, title: job.ErrorDetails || text }));
  } else {
    progress.replaceChildren(element("span", { class: "muted", text: "done" }));
  }
  created.replaceChildren(timeElement(job.CreationTime));
  completed.replaceChildren(timeElement(job.CompletionTime));
}

function renderPager() {
  const pages = Math.max(1, Math.ceil(total / view.limit));
  const shown = rows.length;
  const first = view.page * view.limit + 1;
  const order = view.sort === "desc" ? "newest first" : "oldest first";
  $("#page-info").textContent = shown
    ? `Jobs ${first}–${first + shown - 1} of ${total}, ${order} · page ${view.page + 1} of ${pages}`
    : `0 of ${total} jobs`;
  $("#page-first").disabled = view.page === 0;
  $("#page-prev").disabled = view.page === 0;
  $("#page-next").disabled = view.page >= pages - 1;
  $("#page-last").disabled = view.page >= pages - 1;
}

/** A new job that belongs at the visible end of the list (the top, newest first): shown at once. */
function insertIfNewest(job) {
  const created = job.CreationTime || "";
  const body = $("#jobs-body");
  if (view.sort === "desc" && view.page === 0) {
    if (rows.length && created <= (rows[0].CreationTime || "")) return false;
    body.querySelector("tr.placeholder")?.remove();
    rows.unshift(job);
    body.prepend(makeRow(job));
    while (rows.length > view.limit) {
      const dropped = rows.pop();
      rowElements.get(dropped.ID)?.remove();
      rowElements.delete(dropped.ID);
    }
    total += 1;
    renderPager();
    return true;
  }
  if (view.sort === "asc") {
    const onLastPage = view.page * view.limit + rows.length >= total;
    if (!onLastPage || (rows.length && created <= (rows[rows.length - 1].CreationTime || ""))) return false;
    total += 1;
    if (rows.length < view.limit) {
      body.querySelector("tr.placeholder")?.remove();
      rows.push(job);
      body.append(makeRow(job));
    }
    renderPager();
    return true;
  }
  return false;
}

// ---------------------------------------------------------------------------------------------------
// Live updates: the job-service's event stream

let source = null;
let retryDelay = 1000;
let hadError = false;

function setConnection(state, text) {
  const node = $("#connection");
  node.dataset.state = state;
  $("#connection-text").textContent = text;
}

/**
 * Opens the event stream. After any interruption the page opens a new stream and reads its lists again,
 * rather than letting the browser resume with Last-Event-ID: that also covers a job-service that
 * restarted meanwhile (its event ids start again from 1) and answers that are not a stream (502).
 */
function connect() {
  source = new EventSource(`${SERVICE}/events`);
  source.addEventListener("open", () => {
    setConnection("live", "Live");
    retryDelay = 1000;
    if (hadError) { // changes may have been missed meanwhile: read everything again
      hadError = false;
      reloadAll();
    }
  });
  source.addEventListener("error", (event) => {
    if (event.target !== source) return;
    hadError = true;
    source.close();
    if (retryDelay > 1000) setConnection("offline", `Offline, retrying in ${Math.round(retryDelay / 1000)} s`);
    else setConnection("reconnecting", "Reconnecting…");
    setTimeout(connect, retryDelay);
    retryDelay = Math.min(retryDelay * 2, 30000);
  });
  const handle = (handler) => (event) => {
    let data;
    try {
      data = JSON.parse(event.data);
    } catch {
      return;
    }
    handler(data);
  };
  source.addEventListener("job", handle(onJobEvent));
  source.addEventListener("server", handle(onServerEvent));
  source.addEventListener("removed", handle(onRemovedEvent));
  source.addEventListener("reset", handle(() => reloadAll()));
}

function onJobEvent(job) {
  if (!job || !job.ID) return;
  const previous = lastStates.get(job.ID);
  const stateChanged = previous !== job.State;
  noteJob(job);
  if (stateChanged) {
    expectServerUpdate(job.Server && job.Server.Url);
    if (TERMINAL.has(job.State)) scheduleStats();
  }
  if (detailJob && detailJob.ID === job.ID) renderDetail(job);

  const tr = rowElements.get(job.ID);
  if (tr) {
    const index = rows.findIndex((row) => row.ID === job.ID);
    if (index >= 0) rows[index] = job;
    fillRow(tr, job);
    if (!matches(job)) scheduleReload(); // it left the filtered list: the page and the total changed
    return;
  }
  if (!matches(job)) {
    if (stateChanged && view.status) scheduleReload(); // it may have left the filtered list
    return;
  }
  if (insertIfNewest(job)) return;
  if (stateChanged) scheduleReload(); // a new job elsewhere in the order, or one that entered the filter
}

function onServerEvent(entry) {
  if (!entry || !entry.Url) return;
  servers.set(entry.Url, entry);
  serverChecks.delete(entry.Url);
  renderServers();
  // The Server field of the rows tells the owner's status: keep it in step.
  for (const job of rows) {
    if (job.Server && job.Server.Url === entry.Url && job.Server.Status !== entry.Status) {
      job.Server = { ...job.Server, Status: entry.Status };
      fillRow(rowElements.get(job.ID), job);
    }
  }
}

function onRemovedEvent(data) {
  const id = data && data.ID;
  if (!id) return;
  lastStates.delete(id);
  if (rowElements.has(id)) {
    rowElements.get(id).classList.add("removed");
    scheduleReload();
  }
  if (detailJob && detailJob.ID === id) {
    showDetailMessage("This job is no longer known to the cluster.", true);
    updateActions(null);
  }
}

function reloadAll() {
  loadServers();
  loadJobs();
  loadStats();
  if (detailJob) refreshDetail();
}

// ---------------------------------------------------------------------------------------------------
// Job detail and actions

async function openDetail(id, opener) {
  const dialog = $("#detail");
  detailOpener = opener || document.activeElement;
  if (view.job !== id) {
    view.job = id;
    writeHash();
  }
  detailJob = { ID: id };
  $("#detail-title").textContent = `Job ${id}`;
  $("#detail-facts").replaceChildren(element("dt", { text: "ID" }), element("dd", { class: "mono", text: id }));
  $("#detail-json").textContent = "Loading…";
  $("#detail-progress").replaceChildren();
  $("#detail-error").hidden = true;
  showDetailMessage("");
  updateActions(null);
  if (!dialog.open) dialog.showModal();
  await refreshDetail();
}

async function refreshDetail() {
  const id = detailJob && detailJob.ID;
  if (!id) return;
  try {
    const { body } = await request(`${ORTHANC}/jobs/${encodeURIComponent(id)}`);
    if (detailJob && detailJob.ID === id) renderDetail(body);
  } catch (error) {
    if (!detailJob || detailJob.ID !== id) return;
    $("#detail-json").textContent = "";
    showDetailMessage(error.status === 404 ? `No job ${id} in the cluster.` : `The job could not be read: ${error.message}`, true);
  }
}

function closeDetail() {
  const dialog = $("#detail");
  if (dialog.open) dialog.close();
}

function fact(list, label, ...value) {
  list.append(element("dt", { text: label }), element("dd", {}, ...value));
}

function renderDetail(job) {
  detailJob = job;
  noteJob(job);
  const server = job.Server || {};
  $("#detail-title").textContent = `${job.Type || "Job"} job`;
  const facts = $("#detail-facts");
  facts.replaceChildren();
  fact(facts, "ID", element("span", { class: "mono", text: job.ID }));
  fact(facts, "State", stateBadge(job.State));
  fact(facts, "Type", job.Type || "—");
  const owner = [element("strong", { text: server.Name || "?" }), " ", statusBadge(server.Status)];
  if (server.Url) owner.push(element("div", { class: "url", text: server.Url }));
  if (server.HistoryOnly) {
    owner.push(element("div", { class: "note", text: "Its server no longer holds this job: it is read from the history, and its outputs are gone." }));
  }
  fact(facts, "Server", ...owner);
  if (job.Priority !== undefined) fact(facts, "Priority", String(job.Priority));
  fact(facts, "Created", timeElement(job.CreationTime));
  fact(facts, "Completed", timeElement(job.CompletionTime));
  fact(facts, "Last change", timeElement(job.Timestamp));
  if (job.EstimatedTimeOfArrival) fact(facts, "Expected end", timeElement(job.EstimatedTimeOfArrival));
  if (job.EffectiveRuntime !== undefined) fact(facts, "Run time", `${Number(job.EffectiveRuntime).toFixed(3)} s`);
  if (job.Content && job.Content.Description) fact(facts, "Description", String(job.Content.Description));

  const progress = $("#detail-progress");
  progress.dataset.state = job.State;
  progress.replaceChildren(element("span", { class: "label", text: "Progress" }),
    progressBar(job.Progress, `Progress of job ${job.ID}`));

  const errorBox = $("#detail-error");
  if (job.State === "Failure" || (job.ErrorCode && job.ErrorCode !== 0)) {
    errorBox.hidden = false;
    errorBox.replaceChildren(element("strong", { text: `Error ${job.ErrorCode}: ` }), job.ErrorDescription || "");
    if (job.ErrorDetails) errorBox.append(element("div", { class: "details", text: job.ErrorDetails }));
  } else {
    errorBox.hidden = true;
  }
  updateActions(job);
  $("#detail-json").textContent = JSON.stringify(job, null, 2);

  const tr = rowElements.get(job.ID);
  if (tr) {
    const index = rows.findIndex((row) => row.ID === job.ID);
    if (index >= 0) rows[index] = job;
    fillRow(tr, job);
  }
}

function updateActions(job) {
  const historyOnly = Boolean(job && job.Server && job.Server.HistoryOnly);
  for (const button of document.querySelectorAll("#detail [data-action]")) {
    const allowed = job && !historyOnly && ACTIONS[button.dataset.action].has(job.State);
    button.disabled = !allowed || button.dataset.busy === "1";
  }
  const download = $("#detail-download");
  const downloadable = job && job.State === "Success" && ARCHIVE_TYPES.has(job.Type) && !historyOnly;
  download.hidden = !downloadable;
  if (downloadable) {
    download.href = `${ORTHANC}/jobs/${encodeURIComponent(job.ID)}/archive`;
    download.setAttribute("download", `${job.ID}.zip`);
  }
}

function showDetailMessage(text, isError = false) {
  const message = $("#detail-message");
  message.textContent = text;
  message.classList.toggle("error", isError);
}

async function runAction(action) {
  const job = detailJob;
  if (!job || !job.ID) return;
  if (action === "cancel" && !window.confirm(`Cancel job ${job.ID} (${job.Type || "job"} on ${(job.Server && job.Server.Name) || "its server"})?`)) {
    return;
  }
  const buttons = document.querySelectorAll("#detail [data-action]");
  for (const button of buttons) {
    button.dataset.busy = "1";
    button.disabled = true;
  }
  showDetailMessage(`${action[0].toUpperCase()}${action.slice(1)}…`);
  try {
    await request(`${ORTHANC}/jobs/${encodeURIComponent(job.ID)}/${action}`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: "{}",
    });
    showDetailMessage(ACTION_DONE[action]);
  } catch (error) {
    showDetailMessage(`${action[0].toUpperCase()}${action.slice(1)} failed: ${error.message}`, true);
  } finally {
    for (const button of buttons) delete button.dataset.busy;
  }
  if (detailJob && detailJob.ID === job.ID) await refreshDetail();
}

// ---------------------------------------------------------------------------------------------------
// Chart: jobs completed and failed over time, one lane per server (inline SVG)

function chartPeriod() {
  const [seconds, bucket] = $("#chart-window").value.split(":").map(Number);
  return { seconds, bucket };
}

async function loadStats() {
  const { seconds, bucket } = chartPeriod();
  try {
    const { body } = await request(`${SERVICE}/stats?bucket=${bucket}&window=${seconds}`);
    lastStats = body;
    setProblem("stats", null);
    renderChart();
  } catch (error) {
    $("#chart").replaceChildren(element("p", { class: "muted", text: `The statistics could not be read: ${error.message}` }));
  }
}

function scheduleStats() {
  if (statsTimer) return;
  statsTimer = setTimeout(() => {
    statsTimer = null;
    loadStats();
  }, STATS_DELAY_MS);
}

function renderChart() {
  const container = $("#chart");
  const stats = lastStats;
  if (!stats || !stats.Servers) return;
  const names = Object.keys(stats.Servers).sort();
  if (!names.length) {
    container.replaceChildren(element("p", { class: "muted", text: "No server yet." }));
    return;
  }
  const bucket = Number(stats.Bucket) || 60;
  const period = chartPeriod();
  const width = Math.max(320, Math.floor(container.clientWidth || 480));
  const labelWidth = 110;
  const lane = 38;
  const axis = 20;
  const plotWidth = width - labelWidth - 8;
  const height = names.length * lane + axis;
  // One time line for all servers: from the earliest bucket to the latest.
  let start = Infinity;
  let end = -Infinity;
  for (const name of names) {
    for (const point of stats.Servers[name]) {
      const time = Date.parse(point.Time);
      if (Number.isFinite(time)) {
        start = Math.min(start, time);
        end = Math.max(end, time);
      }
    }
  }
  if (!Number.isFinite(start)) {
    end = Math.floor(Date.now() / (bucket * 1000)) * bucket * 1000;
    start = end - period.seconds * 1000;
  }
  const buckets = Math.max(1, Math.round((end - start) / (bucket * 1000)) + 1);
  const step = plotWidth / buckets;
  let max = 1;
  const sums = {};
  for (const name of names) {
    sums[name] = { Success: 0, Failure: 0 };
    for (const point of stats.Servers[name]) {
      max = Math.max(max, (point.Success || 0) + (point.Failure || 0));
      sums[name].Success += point.Success || 0;
      sums[name].Failure += point.Failure || 0;
    }
  }
  const periodText = $("#chart-window").selectedOptions[0].textContent;
  const summary = names.map((name) => `${name}: ${sums[name].Success} completed, ${sums[name].Failure} failed`).join("; ");
  const root = svg("svg", {
    viewBox: `0 0 ${width} ${height}`, width, height, role: "img", class: "chart-svg",
    "aria-label": `Jobs completed and failed per server, ${periodText}. ${summary}.`,
  });
  const barHeight = lane - 12;
  names.forEach((name, index) => {
    const top = index * lane;
    const base = top + lane - 4;
    const label = svg("g", { class: "lane-label" });
    label.append(svg("text", { x: 0, y: top + 15, class: "lane-name" }, name));
    label.append(svg("text", { x: 0, y: top + 29, class: "lane-sum" }, `${sums[name].Success} ok · ${sums[name].Failure} failed`));
    root.append(label);
    root.append(svg("line", { x1: labelWidth, x2: labelWidth + plotWidth, y1: base + 0.5, y2: base + 0.5, class: "baseline" }));
    for (const point of stats.Servers[name]) {
      const success = point.Success || 0;
      const failure = point.Failure || 0;
      if (!success && !failure) continue;
      const time = Date.parse(point.Time);
      const slot = Math.round((time - start) / (bucket * 1000));
      const x = labelWidth + slot * step + Math.min(1, step * 0.1);
      const w = Math.max(1, step - Math.min(2, step * 0.2));
      const group = svg("g");
      const from = new Date(time);
      const to = new Date(time + bucket * 1000);
      group.append(svg("title", {}, `${name}, ${formatClock(from)}–${formatClock(to)}: ${success} completed, ${failure} failed`));
      const successHeight = (success / max) * barHeight;
      const failureHeight = (failure / max) * barHeight;
      if (success) group.append(svg("rect", { x, y: base - successHeight, width: w, height: successHeight, class: "bar-success" }));
      if (failure) {
        group.append(svg("rect", { x, y: base - successHeight - failureHeight, width: w, height: failureHeight, class: "bar-failure" }));
      }
      root.append(group);
    }
  });
  // Time axis: start, middle, end, and the scale.
  const axisY = names.length * lane + 14;
  const ticks = [[start, "start"], [start + (end - start) / 2, "middle"], [end + bucket * 1000, "end"]];
  for (const [time, anchor] of ticks) {
    const x = labelWidth + ((time - start) / (bucket * 1000)) * step;
    root.append(svg("text", { x: Math.min(x, width - 2), y: axisY, class: "tick", "text-anchor": anchor }, formatClock(new Date(time))));
  }
  root.append(svg("text", { x: 0, y: axisY, class: "tick" }, `scale: ${max} / ${bucket >= 60 ? `${bucket / 60} min` : `${bucket} s`}`));
  container.replaceChildren(root);
}

// ---------------------------------------------------------------------------------------------------
// Controls

function bindControls() {
  $("#filter-status").addEventListener("change", (event) => changeView({ status: event.target.value, page: 0 }));
  $("#filter-server").addEventListener("change", (event) => changeView({ server: event.target.value, page: 0 }));
  const type = $("#filter-type");
  type.addEventListener("change", () => changeView({ type: type.value.trim(), page: 0 }));
  $("#filters").addEventListener("submit", (event) => {
    event.preventDefault();
    changeView({ type: type.value.trim(), page: 0 });
  });
  $("#sort").addEventListener("change", (event) => changeView({ sort: event.target.value, page: 0 }));
  $("#sort-toggle").addEventListener("click", () => changeView({ sort: view.sort === "desc" ? "asc" : "desc", page: 0 }));
  $("#limit").addEventListener("change", (event) => {
    const limit = Number(event.target.value);
    changeView({ limit, page: Math.floor((view.page * view.limit) / limit) });
  });
  $("#clear-filters").addEventListener("click", () => changeView({ status: "", type: "", server: "", page: 0 }));
  $("#page-first").addEventListener("click", () => changeView({ page: 0 }));
  $("#page-prev").addEventListener("click", () => changeView({ page: Math.max(0, view.page - 1) }));
  $("#page-next").addEventListener("click", () => changeView({ page: view.page + 1 }));
  $("#page-last").addEventListener("click", () => changeView({ page: Math.max(0, Math.ceil(total / view.limit) - 1) }));

  $("#search").addEventListener("submit", async (event) => {
    event.preventDefault();
    const input = $("#search-id");
    const message = $("#search-message");
    const id = input.value.trim();
    message.classList.remove("error");
    if (!JOB_ID.test(id)) {
      message.textContent = "A job id is a UUID such as 0dc42374-3171-42f0-88f3-0bb3170f77ad.";
      message.classList.add("error");
      return;
    }
    message.textContent = "Looking…";
    try {
      await request(`${ORTHANC}/jobs/${encodeURIComponent(id)}`);
      message.textContent = "";
      openDetail(id.toLowerCase(), input);
    } catch (error) {
      message.textContent = error.status === 404 ? "No job with this id in the cluster." : error.message;
      message.classList.add("error");
    }
  });

  const dialog = $("#detail");
  $("#detail-close").addEventListener("click", closeDetail);
  dialog.addEventListener("close", () => {
    detailJob = null;
    if (view.job) {
      view.job = "";
      writeHash();
    }
    if (detailOpener && document.contains(detailOpener)) detailOpener.focus();
    detailOpener = null;
  });
  dialog.addEventListener("click", (event) => { // a click on the backdrop closes
    if (event.target === dialog) closeDetail();
  });
  for (const button of document.querySelectorAll("#detail [data-action]")) {
    button.addEventListener("click", () => runAction(button.dataset.action));
  }

  $("#chart-window").addEventListener("change", loadStats);
  $("#banner-close").addEventListener("click", () => {
    problems.clear();
    setProblem("", null);
  });
  window.addEventListener("hashchange", () => {
    const before = JSON.stringify({ ...view, job: "" });
    readHash();
    syncControls();
    if (JSON.stringify({ ...view, job: "" }) !== before) loadJobs();
    if (view.job && (!detailJob || detailJob.ID !== view.job)) openDetail(view.job);
    else if (!view.job) closeDetail();
  });
  if (window.ResizeObserver) {
    let width = 0;
    new ResizeObserver((entries) => {
      const next = Math.round(entries[0].contentRect.width);
      if (next !== width) {
        width = next;
        renderChart();
      }
    }).observe($("#chart"));
  }
  setInterval(() => {
    if (!document.hidden) loadStats();
  }, STATS_REFRESH_MS);
}

function start() {
  readHash();
  renderTypes();
  syncControls();
  bindControls();
  connect();
  loadServers();
  loadJobs();
  loadStats();
  if (view.job) openDetail(view.job);
}

start();
