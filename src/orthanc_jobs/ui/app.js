// The dashboard of the cluster's jobs: servers, jobs, live updates, actions and a chart. Plain JavaScript
// modules, no library, no build step. This one starts the page and wires its controls to the others:
//   state.js      the rules (job states and their actions, the view and its address, Orthanc's times)
//   dashboard.js  everything the page holds, in one object
//   api.js        requests and the event stream          dom.js      elements, badges, the banner
//   filters.js    the filter form and the address        servers.js  the cluster overview
//   jobs.js       the jobs table and its pager           detail.js   a job's detail and its actions
//   chart.js      jobs completed and failed over time    live.js     what the event stream changes
//   webhooks.js   the alerts by webhook and their deliveries
// (package.json only tells Node, which runs the rules' unit tests, that these files are ES modules.)

import { readJob } from "./api.js";
import { loadStats, renderChart } from "./chart.js";
import { dashboard, showsDetailOf } from "./dashboard.js";
import { closeDetail, detailClosed, openDetail, runAction } from "./detail.js";
import { $, dismissProblems } from "./dom.js";
import { readAddress, renderTypes, syncControls, writeAddress } from "./filters.js";
import { loadJobs } from "./jobs.js";
import { goLive } from "./live.js";
import { loadServers } from "./servers.js";
import { isJobId, lastPage, pageForLimit } from "./state.js";
import { loadWebhooks } from "./webhooks.js";

// The chart is read again this often (jobs that end are shown sooner: see chart.js).
const STATS_REFRESH_MS = 60000;
// The webhooks' deliveries are read again this often (the event stream does not tell them).
const WEBHOOKS_REFRESH_MS = 10000;

/** Changes the view (filters, order, page) and loads the matching jobs. */
function changeView(changes) {
  Object.assign(dashboard.view, changes);
  writeAddress();
  syncControls();
  loadJobs();
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
    if (event.target.closest("button, a")) return;
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
  readAddress();
  syncControls();
  if (JSON.stringify({ ...view, job: "" }) !== before) loadJobs();
  if (view.job && !showsDetailOf(view.job)) openDetail(view.job);
  else if (!view.job) closeDetail();
}

function bindControls() {
  const { view } = dashboard;
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
    changeView({ limit, page: pageForLimit(view, limit) });
  });
  $("#clear-filters").addEventListener("click", () => changeView({ status: "", type: "", server: "", page: 0 }));
  $("#page-first").addEventListener("click", () => changeView({ page: 0 }));
  $("#page-prev").addEventListener("click", () => changeView({ page: Math.max(0, view.page - 1) }));
  $("#page-next").addEventListener("click", () => changeView({ page: view.page + 1 }));
  $("#page-last").addEventListener("click", () => changeView({ page: lastPage(dashboard.total, view.limit) }));
  $("#search").addEventListener("submit", searchJob);
  $("#servers-body").addEventListener("click", showServerJobs);
  $("#jobs-body").addEventListener("click", openJobOfRow);

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
  $("#banner-close").addEventListener("click", dismissProblems);
  window.addEventListener("hashchange", followAddress);
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
  loadWebhooks();
  if (dashboard.view.job) openDetail(dashboard.view.job);
}

start();
