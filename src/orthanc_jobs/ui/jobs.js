// The jobs table: one page of the cluster's jobs as the API filters, sorts and pages them, kept in step
// with the event stream row by row, and its pager.

import { readJobs } from "./api.js";
import { renderSelection } from "./bulk.js";
import { cancelRun, dashboard, rememberJob, runOnce } from "./dashboard.js";
import { $, element, progressBar, setProblem, setProgress, stateBadge, stuckBadge, timeElement } from "./dom.js";
import { renderTypes, writeAddress } from "./filters.js";
import {
  hasFilters, isUnfinished, jobsQuery, lastPage, matchesView, pageCount, pageSlice, pageSummary,
} from "./state.js";

// The table's columns: the checkbox, the job's id, and what fillRow writes.
const COLUMNS = 8;

// Reloads caused by events are grouped: at most one list request per this many milliseconds.
const RELOAD_INTERVAL_MS = 2000;

/** Reads the current page. Newest first is the end of the API's (creation-ascending) order, reversed. */
export async function loadJobs() {
  const ticket = ++dashboard.jobsRequest;
  dashboard.lastReload = Date.now();
  cancelRun("reload");
  const table = $("#jobs");
  table.setAttribute("aria-busy", "true");
  try {
    const { view } = dashboard;
    const query = jobsQuery(view);
    let page;
    if (view.sort === "asc") {
      const { offset, limit } = pageSlice(view, dashboard.total);
      page = await readJobs(query, offset, limit);
    } else {
      let known = dashboard.total;
      for (let attempt = 0; attempt < 3; attempt += 1) {
        const { offset, limit } = pageSlice(view, known);
        page = await readJobs(query, offset, limit);
        if (page.total === known) break;
        known = page.total; // jobs came or went meanwhile: ask again with the new total
      }
      page.jobs.reverse();
    }
    if (ticket !== dashboard.jobsRequest) return;
    dashboard.total = page.total;
    const last = lastPage(dashboard.total, view.limit);
    if (view.page > last) { // fewer jobs than the page asked for: show the last one
      view.page = last;
      writeAddress();
      loadJobs();
      return;
    }
    renderJobs(page.jobs);
    setProblem("jobs", null);
  } catch (error) {
    if (ticket !== dashboard.jobsRequest) return;
    setProblem("jobs", `Jobs could not be read: ${error.message}`);
    if (!dashboard.rows.length) {
      $("#jobs-body").replaceChildren(element("tr", { class: "placeholder" },
        element("td", { colspan: COLUMNS, text: "The jobs could not be read." })));
    }
  } finally {
    if (ticket === dashboard.jobsRequest) table.removeAttribute("aria-busy");
  }
}

/** Several events in a row ask for one reload, at most every RELOAD_INTERVAL_MS. */
export function scheduleReload() {
  const wait = Math.max(200, RELOAD_INTERVAL_MS - (Date.now() - dashboard.lastReload));
  runOnce("reload", wait, loadJobs);
}

/** Notes a job's state, and offers its type to the type filter if it is a new one. */
export function noteJob(job) {
  if (rememberJob(job)) renderTypes();
}

function renderJobs(jobs) {
  dashboard.rows = jobs.slice();
  dashboard.rowElements.clear();
  const body = $("#jobs-body");
  body.replaceChildren();
  for (const job of dashboard.rows) {
    noteJob(job);
    body.append(makeRow(job));
  }
  if (!dashboard.rows.length) {
    const text = hasFilters(dashboard.view) ? "No job matches these filters." : "No job in the cluster yet.";
    body.append(element("tr", { class: "placeholder" }, element("td", { colspan: COLUMNS, text })));
  }
  renderPager();
  renderTypes();
  renderSelection();
}

/** A row: its checkbox selects it, its job's id is a button that opens the job (the app listens to the
 * table's clicks and changes). */
function makeRow(job) {
  const { selection } = dashboard;
  const select = element("input", {
    type: "checkbox", class: "select-job", "aria-label": `Select job ${job.ID}`,
    checked: selection.all || selection.ids.has(job.ID),
  });
  const open = element("button", {
    type: "button", class: "job-link", text: job.ID, "aria-label": `Open job ${job.ID}`,
  });
  const tr = element("tr", { dataset: { jobId: job.ID } },
    element("td", { class: "select" }, select), element("td", { class: "id" }, open));
  for (let i = 2; i < COLUMNS; i += 1) tr.append(element("td"));
  fillRow(tr, job);
  dashboard.rowElements.set(job.ID, tr);
  return tr;
}

/** Writes a job into its row (everything but the id), so that live updates keep the row in place. */
function fillRow(tr, job) {
  const [, , type, owner, state, progress, created, completed] = tr.cells;
  tr.dataset.state = job.State;
  tr.dataset.type = job.Type || "";
  tr.dataset.server = (job.Server && job.Server.Name) || "";
  tr.classList.toggle("stale", !matchesView(job, dashboard.view));
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
  tr.dataset.stuck = String(Boolean(server.Stuck && job.State === "Running"));
  state.replaceChildren(...[stateBadge(job.State), stuckBadge(job)].filter(Boolean));
  if (isUnfinished(job.State)) {
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

/** Writes a newer description of a job into its row; false if the page does not show the job. */
export function updateRow(job) {
  const tr = dashboard.rowElements.get(job.ID);
  if (!tr) return false;
  const index = dashboard.rows.findIndex((row) => row.ID === job.ID);
  if (index >= 0) dashboard.rows[index] = job;
  fillRow(tr, job);
  return true;
}

/** The Server field of the rows tells the owner's status: keeps it in step with a server's entry. */
export function updateOwnerStatus(entry) {
  for (const job of dashboard.rows) {
    if (job.Server && job.Server.Url === entry.Url && job.Server.Status !== entry.Status) {
      job.Server = { ...job.Server, Status: entry.Status };
      fillRow(dashboard.rowElements.get(job.ID), job);
    }
  }
}

/** A job the cluster forgot: its row is greyed until the page is read again. */
export function markRemoved(id) {
  const tr = dashboard.rowElements.get(id);
  if (!tr) return;
  tr.classList.add("removed");
  scheduleReload();
}

function renderPager() {
  const { view, total, rows } = dashboard;
  const pages = pageCount(total, view.limit);
  $("#page-info").textContent = pageSummary(view, total, rows.length);
  $("#page-first").disabled = view.page === 0;
  $("#page-prev").disabled = view.page === 0;
  $("#page-next").disabled = view.page >= pages - 1;
  $("#page-last").disabled = view.page >= pages - 1;
}

/** A new job that belongs at the visible end of the list (the top, newest first): shown at once. */
export function insertIfNewest(job) {
  const { view, rows, rowElements } = dashboard;
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
    dashboard.total += 1;
    renderPager();
    return true;
  }
  if (view.sort === "asc") {
    const onLastPage = view.page * view.limit + rows.length >= dashboard.total;
    if (!onLastPage || (rows.length && created <= (rows[rows.length - 1].CreationTime || ""))) return false;
    dashboard.total += 1;
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
