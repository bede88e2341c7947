// The dashboard of the cluster's jobs: servers, jobs, live updates, actions and a chart. Plain JavaScript
// modules, no library, no build step. This one starts the page and wires its controls to the others:
//   state.js      the rules (job states and their actions, the view and its address, Orthanc's times)
//   dashboard.js  everything the page holds, in one object
//   api.js        requests and the event stream          dom.js      elements, badges, the banner
//   filters.js    the filter form and the address        servers.js  the cluster overview
//   jobs.js       the jobs table and its pager           detail.js   a job's detail and its actions
//   chart.js      the charts: jobs ended per server, jobs per period by state, where time goes
//   bulk.js       the selection and actions on many jobs  webhooks.js the webhooks' deliveries
//   live.js       what the event stream changes
// (package.json only tells Node, which runs the rules' unit tests, that these files are ES modules.)

import { readJob } from "./api.js";
import {
  askBulkAction, bulkClosed, clearSelection, closeBulk, confirmBulkAction, onPageChecked, onRowChecked,
  selectAllMatching, stopBulk,
} from "./bulk.js";
import { loadStats, loadTimeStats, renderChart, renderTimeChart } from "./chart.js";
import { dashboard, showsDetailOf } from "./dashboard.js";
import { closeDetail, detailClosed, openDetail, runAction } from "./detail.js";
import { $, dismissProblems } from "./dom.js";
import { loadFeatures, readAddress, renderTypes, syncControls, timeFields, writeAddress } from "./filters.js";
import { loadJobs } from "./jobs.js";
import { goLive } from "./live.js";
import { loadServers } from "./servers.js";
import { FILTERS, isJobId, isResourceId, lastPage, pageForLimit, utcOfLocalInput } from "./state.js";
import { loadWebhooks } from "./webhooks.js";

// The charts are read again this often (jobs that end are shown sooner: see chart.js); the webhooks too.
const STATS_REFRESH_MS = 60000;
const WEBHOOKS_REFRESH_MS = 15000;

const filtersOf = (view) => JSON.stringify(FILTERS.map(({ key }) => view[key]));

/** Changes the view (filters, order, page) and loads the matching jobs; new filters, a new selection. */
function changeView(changes) {
  const before = filtersOf(dashboard.view);
  Object.assign(dashboard.view, changes);
  if (filtersOf(dashboard.view) !== before) clearSelection();
  writeAddress();
  syncControls();
  loadJobs();
}

/** The filters typed (type, search, resource, times), applied at once: a resource must be Orthanc's id. */
function applyTypedFilters() {
  const resource = $("#filter-resource").value.trim();
  const message = $("#filter-message");
  if (resource && !isResourceId(resource)) {
    message.textContent = "A resource id is Orthanc's, e.g. 6e2c0ec2-5d99bd1c-e9d0e7d5-f1a2b0c3-8d4e5f60.";
    message.classList.add("error");
    return;
  }
  message.textContent = "";
  message.classList.remove("error");
  const changes = {
    type: $("#filter-type").value.trim(), q: $("#filter-q").value.trim(), resource: resource.toLowerCase(), page: 0,
  };
  for (const field of timeFields()) changes[field.dataset.filter] = utcOfLocalInput(field.value);
  changeView(changes);
}

function clearFilters() {
  const changes = { page: 0 };
  for (const { key } of FILTERS) changes[key] = "";
  changeView(changes);
}

/** A server's name or one of its counts: shows its jobs (in that state). */
function showServerJobs(event) {
  const button = event.target.closest("button.server-name, button.count-link");
  const row = button && button.closest("tr[data-server]");
  if (!row) return;
  changeView({ server: row.dataset.server, status: button.dataset.state || "", page: 0 });
  $("#jobs-heading").focus();
}

/** A job's id, or anywhere else on its row but a control or a selection of text: opens the job. */
function openJobOfRow(event) {
  const row = event.target.closest("tr[data-job-id]");
  if (!row) return;
  const open = row.querySelector("button.job-link");
  if (!event.target.closest("button.job-link")) {
    if (event.target.closest("button, a, input, td.select")) return;
    if (window.getSelection && String(window.getSelection())) return; // selecting text, e.g. to copy an id
  }
  openDetail(row.dataset.jobId, open);
}

async function searchJob(event) {
  event.preventDefault();
  const input = $("#search-id");
  const message = $("#search-message");
  const id = input.value.trim();
  message.classList.remove("error");
  if (!isJobId(id)) {
    message.textContent = "A job id is a UUID such as 0dc42374-3171-42f0-88f3-0bb3170f77ad.";
    message.classList.add("error");
    return;
  }
  message.textContent = "Looking…";
  try {
    await readJob(id);
    message.textContent = "";
    openDetail(id.toLowerCase(), input);
  } catch (error) {
    message.textContent = error.status === 404 ? "No job with this id in the cluster." : error.message;
    message.classList.add("error");
  }
}

/** The address changed (back, forward, a link): the page follows it. */
function followAddress() {
  const { view } = dashboard;
  const before = JSON.stringify({ ...view, job: "" });
  const filtersBefore = filtersOf(view);
  readAddress();
  if (filtersOf(view) !== filtersBefore) clearSelection();
  syncControls();
  if (JSON.stringify({ ...view, job: "" }) !== before) loadJobs();
  if (view.job && !showsDetailOf(view.job)) openDetail(view.job);
  else if (!view.job) closeDetail();
}

/** Draws a chart again when its box's width changes. */
function redrawOnResize(box, draw) {
  if (!window.ResizeObserver) return;
  let width = 0;
  new ResizeObserver((entries) => {
    const next = Math.round(entries[0].contentRect.width);
    if (next !== width) {
      width = next;
      draw();
    }
  }).observe(box);
}

function bindControls() {
  const { view } = dashboard;
  $("#filter-status").addEventListener("change", (event) => changeView({ status: event.target.value, page: 0 }));
  $("#filter-server").addEventListener("change", (event) => changeView({ server: event.target.value, page: 0 }));
  $("#filter-type").addEventListener("change", applyTypedFilters);
  for (const field of timeFields()) field.addEventListener("change", applyTypedFilters);
  $("#filters").addEventListener("submit", (event) => {
    event.preventDefault();
    applyTypedFilters();
  });
  $("#sort").addEventListener("change", (event) => changeView({ sort: event.target.value, page: 0 }));
  $("#sort-toggle").addEventListener("click", () => changeView({ sort: view.sort === "desc" ? "asc" : "desc", page: 0 }));
  $("#limit").addEventListener("change", (event) => {
    const limit = Number(event.target.value);
    changeView({ limit, page: pageForLimit(view, limit) });
  });
  $("#clear-filters").addEventListener("click", clearFilters);
  $("#page-first").addEventListener("click", () => changeView({ page: 0 }));
  $("#page-prev").addEventListener("click", () => changeView({ page: Math.max(0, view.page - 1) }));
  $("#page-next").addEventListener("click", () => changeView({ page: view.page + 1 }));
  $("#page-last").addEventListener("click", () => changeView({ page: lastPage(dashboard.total, view.limit) }));
  $("#search").addEventListener("submit", searchJob);
  $("#servers-body").addEventListener("click", showServerJobs);
  $("#jobs-body").addEventListener("click", openJobOfRow);
  $("#jobs-body").addEventListener("change", (event) => {
    if (event.target.matches("input.select-job")) onRowChecked(event.target);
  });
  $("#select-page").addEventListener("change", (event) => onPageChecked(event.target));
  $("#select-all-matching").addEventListener("click", selectAllMatching);
  $("#clear-selection").addEventListener("click", () => {
    clearSelection();
    $("#select-page").focus();
  });
  for (const button of document.querySelectorAll("#bulk-bar [data-bulk-action]")) {
    button.addEventListener("click", () => askBulkAction(button.dataset.bulkAction, button));
  }
  const bulk = $("#bulk");
  $("#bulk-confirm").addEventListener("click", confirmBulkAction);
  $("#bulk-stop").addEventListener("click", stopBulk);
  $("#bulk-close").addEventListener("click", closeBulk);
  bulk.addEventListener("close", bulkClosed);

  const dialog = $("#detail");
  $("#detail-close").addEventListener("click", closeDetail);
  dialog.addEventListener("close", detailClosed);
  dialog.addEventListener("click", (event) => { // a click on the backdrop closes
    if (event.target === dialog) closeDetail();
  });
  for (const button of document.querySelectorAll("#detail [data-action]")) {
    button.addEventListener("click", () => runAction(button.dataset.action));
  }

  $("#chart-window").addEventListener("change", loadStats);
  $("#time-period").addEventListener("change", loadTimeStats);
  $("#time-type").addEventListener("change", renderTimeChart);
  $("#banner-close").addEventListener("click", dismissProblems);
  window.addEventListener("hashchange", followAddress);
  redrawOnResize($("#chart"), renderChart);
  redrawOnResize($("#time-chart"), renderTimeChart);
  setInterval(() => {
    if (document.hidden) return;
    loadStats();
    loadTimeStats();
  }, STATS_REFRESH_MS);
  setInterval(() => {
    if (!document.hidden) loadWebhooks();
  }, WEBHOOKS_REFRESH_MS);
}

function start() {
  readAddress();
  renderTypes();
  syncControls();
  bindControls();
  goLive();
  loadServers();
  loadJobs();
  loadStats();
  loadTimeStats();
  loadFeatures().then(loadWebhooks);
  if (dashboard.view.job) openDetail(dashboard.view.job);
}

start();
