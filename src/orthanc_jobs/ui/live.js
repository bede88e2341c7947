// Live updates: the job-service's event stream keeps rows, counts, progress bars, stuck badges, the charts
// and the progress of an action on many jobs in step with the cluster, without polling.

import { followEvents } from "./api.js";
import { onActionEvent } from "./bulk.js";
import { loadStats, loadTimeStats, scheduleStats, scheduleTimeStats } from "./chart.js";
import { dashboard, showsDetailOf } from "./dashboard.js";
import { $ } from "./dom.js";
import { detailGone, refreshDetail, renderDetail } from "./detail.js";
import {
  insertIfNewest, loadJobs, markRemoved, noteJob, scheduleReload, updateOwnerStatus, updateRow,
} from "./jobs.js";
import { expectServerUpdate, loadServers, updateServer } from "./servers.js";
import { isTerminal, matchesView } from "./state.js";

/** Reads everything again: servers, jobs, chart and the open job. */
function reloadAll() {
  loadServers();
  loadJobs();
  loadStats();
  loadTimeStats();
  if (dashboard.detail.job) refreshDetail();
}

export function goLive() {
  followEvents(
    { job: onJobEvent, server: onServerEvent, removed: onRemovedEvent, reset: reloadAll, action: onActionEvent },
    { onConnection: showConnection, onResumed: reloadAll },
  );
}

function showConnection(state, retrySeconds) {
  const texts = { live: "Live", reconnecting: "Reconnecting…", offline: `Offline, retrying in ${retrySeconds} s` };
  $("#connection").dataset.state = state;
  $("#connection-text").textContent = texts[state];
}

function onJobEvent(job) {
  if (!job || !job.ID) return;
  const { view } = dashboard;
  const stateChanged = dashboard.lastStates.get(job.ID) !== job.State;
  noteJob(job);
  if (stateChanged) {
    expectServerUpdate(job.Server && job.Server.Url);
    if (isTerminal(job.State)) scheduleStats();
    scheduleTimeStats();
  }
  if (showsDetailOf(job.ID)) renderDetail(job);

  if (updateRow(job)) {
    if (!matchesView(job, view)) scheduleReload(); // it left the filtered list: the page and the total changed
    return;
  }
  if (!matchesView(job, view)) {
    if (stateChanged && view.status) scheduleReload(); // it may have left the filtered list
    return;
  }
  if (insertIfNewest(job)) return;
  if (stateChanged) scheduleReload(); // a new job elsewhere in the order, or one that entered the filter
}

function onServerEvent(entry) {
  if (!entry || !entry.Url) return;
  updateServer(entry);
  updateOwnerStatus(entry);
}

function onRemovedEvent(data) {
  const id = data && data.ID;
  if (!id) return;
  dashboard.lastStates.delete(id);
  markRemoved(id);
  if (showsDetailOf(id)) detailGone();
}
