// A job's detail: Orthanc's JSON, its owner and timestamps, and the actions its state allows.

import { archiveUrl, postJobAction, readJob } from "./api.js";
import { dashboard, showsDetailOf } from "./dashboard.js";
import { $, element, progressBar, stateBadge, statusBadge, stuckBadge, timeElement } from "./dom.js";
import { writeAddress } from "./filters.js";
import { noteJob, updateRow } from "./jobs.js";
import { allowsAction, offersArchive } from "./state.js";

const ACTION_DONE = { pause: "Paused.", resume: "Resumed.", cancel: "Cancelled.", resubmit: "Resubmitted." };

const actionButtons = () => document.querySelectorAll("#detail [data-action]");
const capitalized = (word) => `${word[0].toUpperCase()}${word.slice(1)}`;

/** Opens the dialog on the job `id`, then reads it; `opener` gets the focus back when it closes. */
export async function openDetail(id, opener) {
  const dialog = $("#detail");
  const { view, detail } = dashboard;
  detail.opener = opener || document.activeElement;
  if (view.job !== id) {
    view.job = id;
    writeAddress();
  }
  detail.job = { ID: id };
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

/** Reads the shown job again. */
export async function refreshDetail() {
  const id = dashboard.detail.job && dashboard.detail.job.ID;
  if (!id) return;
  try {
    const job = await readJob(id);
    if (showsDetailOf(id)) renderDetail(job);
  } catch (error) {
    if (!showsDetailOf(id)) return;
    $("#detail-json").textContent = "";
    showDetailMessage(error.status === 404 ? `No job ${id} in the cluster.` : `The job could not be read: ${error.message}`, true);
  }
}

export function closeDetail() {
  const dialog = $("#detail");
  if (dialog.open) dialog.close();
}

/** The dialog closed (button, Escape, backdrop): the address forgets the job, the opener gets the focus. */
export function detailClosed() {
  const { view, detail } = dashboard;
  detail.job = null;
  if (view.job) {
    view.job = "";
    writeAddress();
  }
  if (detail.opener && document.contains(detail.opener)) detail.opener.focus();
  detail.opener = null;
}

/** The shown job is no longer known to the cluster: nothing can be done with it. */
export function detailGone() {
  showDetailMessage("This job is no longer known to the cluster.", true);
  updateActions(null);
}

function fact(list, label, ...value) {
  list.append(element("dt", { text: label }), element("dd", {}, ...value));
}

/** Shows a job, as read or as an event described it, in the dialog (and in its row). */
export function renderDetail(job) {
  dashboard.detail.job = job;
  noteJob(job);
  const server = job.Server || {};
  $("#detail-title").textContent = `${job.Type || "Job"} job`;
  const facts = $("#detail-facts");
  facts.replaceChildren();
  fact(facts, "ID", element("span", { class: "mono", text: job.ID }));
  fact(facts, "State", stateBadge(job.State), stuckBadge(job) && " ", stuckBadge(job));
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
  updateRow(job);
}

/** Offers the actions the job's state allows (none while one runs), and its archive if it has one. */
function updateActions(job) {
  for (const button of actionButtons()) {
    button.disabled = !allowsAction(job, button.dataset.action) || button.dataset.busy === "1";
  }
  const download = $("#detail-download");
  const downloadable = offersArchive(job);
  download.hidden = !downloadable;
  if (downloadable) {
    download.href = archiveUrl(job.ID);
    download.setAttribute("download", `${job.ID}.zip`);
  }
}

function showDetailMessage(text, isError = false) {
  const message = $("#detail-message");
  message.textContent = text;
  message.classList.toggle("error", isError);
}

/** Asks the job's owner for `action` (a cancel once confirmed), then reads the job again. */
export async function runAction(action) {
  const job = dashboard.detail.job;
  if (!job || !job.ID) return;
  const owner = (job.Server && job.Server.Name) || "its server";
  if (action === "cancel" && !window.confirm(`Cancel job ${job.ID} (${job.Type || "job"} on ${owner})?`)) {
    return;
  }
  const buttons = actionButtons();
  for (const button of buttons) {
    button.dataset.busy = "1";
    button.disabled = true;
  }
  showDetailMessage(`${capitalized(action)}…`);
  try {
    await postJobAction(job.ID, action);
    showDetailMessage(ACTION_DONE[action]);
  } catch (error) {
    showDetailMessage(`${capitalized(action)} failed: ${error.message}`, true);
  } finally {
    for (const button of buttons) delete button.dataset.busy;
  }
  if (showsDetailOf(job.ID)) await refreshDetail();
}
