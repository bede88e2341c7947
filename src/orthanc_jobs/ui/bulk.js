// Actions on many jobs: the selection (a checkbox per row, the page, or every job matching the filters),
// the action bar, and the dialog that asks the service's dry run, confirms by the count and the refusals,
// then follows the run (`action` events, or reads of its Path when none come) to its results per job.

import { postBulkAction, readBulkAction, stopBulkAction } from "./api.js";
import { cancelRun, dashboard, runOnce } from "./dashboard.js";
import { $, element } from "./dom.js";
import {
  actionFilter, actionProgressText, confirmationText, isNewerProgress, selectionText, sortedResults,
} from "./state.js";

// Without an `action` event for this long, the run is read from its Path (events are the first source).
const POLL_MS = 2000;
// Results drawn in the dialog at most (those not done first); the rest are counted.
const MAX_RESULT_ROWS = 500;
// Events of runs the page has not been told the ID of yet (its answer may come after the first events).
const MAX_EARLY_EVENTS = 20;

const RESULT_LABELS = { done: "done", refused: "refused", unreachable: "owner unreachable" };
const capitalized = (word) => `${word[0].toUpperCase()}${word.slice(1)}`;

// ---------------------------------------------------------------------------------------------------
// The selection

/** Forgets the selection (the filters changed, or the action ran). */
export function clearSelection() {
  dashboard.selection.ids.clear();
  dashboard.selection.all = false;
  renderSelection();
}

/** A row's checkbox changed. Unticking a row while every matching job is selected keeps the page's other
 * rows selected. */
export function onRowChecked(checkbox) {
  const id = checkbox.closest("tr[data-job-id]").dataset.jobId;
  const { selection } = dashboard;
  if (selection.all) {
    selection.all = false;
    for (const job of dashboard.rows) selection.ids.add(job.ID);
  }
  if (checkbox.checked) selection.ids.add(id);
  else selection.ids.delete(id);
  renderSelection();
}

/** The header's checkbox: every row of the page, or none. */
export function onPageChecked(checkbox) {
  const { selection } = dashboard;
  selection.all = false;
  for (const job of dashboard.rows) {
    if (checkbox.checked) selection.ids.add(job.ID);
    else selection.ids.delete(job.ID);
  }
  renderSelection();
}

export function selectAllMatching() {
  dashboard.selection.all = true;
  dashboard.selection.ids.clear();
  renderSelection();
  $("#clear-selection").focus();
}

/** The rows' checkboxes, the header's, and the action bar, as the selection stands. */
export function renderSelection() {
  const { selection, rows, total } = dashboard;
  let checked = 0;
  for (const job of rows) {
    const box = dashboard.rowElements.get(job.ID)?.querySelector("input.select-job");
    if (!box) continue;
    box.checked = selection.all || selection.ids.has(job.ID);
    if (box.checked) checked += 1;
  }
  const page = $("#select-page");
  page.checked = rows.length > 0 && checked === rows.length;
  page.indeterminate = checked > 0 && checked < rows.length;
  page.disabled = rows.length === 0;
  const text = selectionText(selection, total);
  $("#bulk-bar").hidden = !text;
  $("#selection-text").textContent = text;
  const offerAll = $("#select-all-matching");
  offerAll.hidden = selection.all || !page.checked || total <= rows.length;
  offerAll.textContent = `Select all ${total} jobs matching the filters`;
}

// ---------------------------------------------------------------------------------------------------
// The dialog: dry run, confirmation, progress, results

function showMessage(text) {
  $("#bulk-message").textContent = text;
}

/** Asks the dry run of `action` on the selection, and shows what it would do. */
export async function askBulkAction(action, opener) {
  const { bulk, selection, view } = dashboard;
  Object.assign(bulk, {
    filter: actionFilter(view, selection), summary: null, id: "", path: "", progress: null, heardAt: 0,
    opener: opener || document.activeElement, starting: false,
  });
  bulk.early.clear();
  bulk.expectedTotal = selection.all ? dashboard.total : selection.ids.size;
  $("#bulk-title").textContent = `${capitalized(action)} jobs`;
  $("#bulk-question").textContent = "Counting the jobs…";
  $("#bulk-reasons").replaceChildren();
  $("#bulk-note").textContent = "";
  $("#bulk-progress").hidden = true;
  $("#bulk-results-wrap").hidden = true;
  $("#bulk-stop").hidden = true;
  $("#bulk-confirm").hidden = true;
  $("#bulk-close").textContent = "Close";
  showMessage("");
  const dialog = $("#bulk");
  if (!dialog.open) dialog.showModal();
  await dryRun(action);
}

async function dryRun(action) {
  const { bulk } = dashboard;
  try {
    bulk.summary = await postBulkAction(action, bulk.filter);
  } catch (error) {
    $("#bulk-question").textContent = "";
    showMessage(`The jobs could not be counted: ${error.message}`);
    return;
  }
  renderConfirmation();
}

function renderConfirmation() {
  const { bulk } = dashboard;
  const summary = bulk.summary;
  $("#bulk-question").textContent = confirmationText(summary);
  $("#bulk-reasons").replaceChildren(...(summary.RefusedReasons || []).map((reason) =>
    element("li", {}, element("strong", { text: String(reason.Count) }), ` refused: ${reason.Reason}`)));
  const note = summary.Matching !== bulk.expectedTotal
    ? `The ${bulk.filter.ids ? "selection" : "filters"} match ${summary.Matching} jobs now (the page counted ` +
      `${bulk.expectedTotal}).`
    : "";
  $("#bulk-note").textContent = note;
  const confirm = $("#bulk-confirm");
  confirm.hidden = !summary.Accepted;
  confirm.disabled = false;
  confirm.textContent = `${capitalized(summary.Action)} ${summary.Accepted} job${summary.Accepted === 1 ? "" : "s"}`;
  confirm.classList.toggle("danger", summary.Action === "cancel" || summary.Action === "delete");
  $("#bulk-close").textContent = summary.Accepted ? "Not now" : "Close";
  (summary.Accepted ? confirm : $("#bulk-close")).focus();
}

/** The person confirmed: the run starts, for exactly the count they saw (else the service says 409). */
export async function confirmBulkAction() {
  const { bulk } = dashboard;
  const { summary } = bulk;
  if (!summary || !summary.Accepted) return;
  const confirm = $("#bulk-confirm");
  confirm.disabled = true;
  showMessage("");
  let started;
  bulk.starting = true;
  try {
    started = await postBulkAction(summary.Action, bulk.filter, summary.Accepted);
  } catch (error) {
    bulk.starting = false;
    if (error.status === 409) {
      showMessage(`The jobs changed since they were counted: counted again. ${error.message}`);
      await dryRun(summary.Action);
    } else {
      confirm.disabled = false;
      showMessage(`${capitalized(summary.Action)} could not start: ${error.message}`);
    }
    return;
  }
  bulk.starting = false;
  bulk.id = started.ID;
  bulk.path = started.Path;
  confirm.hidden = true;
  $("#bulk-reasons").replaceChildren();
  $("#bulk-note").textContent = "";
  $("#bulk-question").textContent = `${capitalized(summary.Action)} of ${summary.Accepted} jobs:`;
  $("#bulk-progress").hidden = false;
  $("#bulk-stop").hidden = false;
  $("#bulk-close").textContent = "Close";
  applyProgress({
    ID: bulk.id, Action: summary.Action, State: "Running", Total: summary.Accepted, Processed: 0, Done: 0,
    Refused: 0, Unreachable: 0,
  });
  const early = bulk.early.get(bulk.id);
  bulk.early.clear();
  if (early) onActionEvent(early);
  runOnce("bulk-poll", POLL_MS, pollBulkAction);
}

/** An `action` event: the progress of a run (the last one, its results). */
export function onActionEvent(progress) {
  const { bulk } = dashboard;
  if (!progress || !progress.ID) return;
  if (progress.ID !== bulk.id) {
    if (bulk.starting) { // a run is starting: this may be it
      bulk.early.set(progress.ID, progress);
      while (bulk.early.size > MAX_EARLY_EVENTS) bulk.early.delete(bulk.early.keys().next().value);
    }
    return;
  }
  bulk.heardAt = Date.now();
  applyProgress(progress);
}

const hasEnded = (progress) => Boolean(progress && progress.State !== "Running" && progress.Results);

/** Reads the run when no event came for a while: the stream may be down, or behind a proxy that buffers. */
async function pollBulkAction() {
  const { bulk } = dashboard;
  if (!bulk.path || hasEnded(bulk.progress)) return;
  if (Date.now() - bulk.heardAt >= POLL_MS) {
    const path = bulk.path;
    try {
      const progress = await readBulkAction(path);
      if (path === bulk.path) applyProgress(progress);
    } catch (error) {
      // 404: another replica runs it (each keeps its own runs); its events still come through the stream.
      if (error.status !== 404) showMessage(`The action's progress could not be read: ${error.message}`);
    }
  }
  if (!hasEnded(bulk.progress)) runOnce("bulk-poll", POLL_MS, pollBulkAction);
}

function applyProgress(progress) {
  const { bulk } = dashboard;
  // The final word without its results (a stopped run's answer) is completed by a read or the last event.
  if (!isNewerProgress(bulk.progress, progress) && !(progress.Results && !bulk.progress.Results)) return;
  bulk.progress = progress;
  const percent = progress.Total ? Math.round((100 * progress.Processed) / progress.Total) : 100;
  const bar = $("#bulk-progress .progress");
  bar.setAttribute("aria-valuenow", String(percent));
  bar.firstChild.style.width = `${percent}%`;
  $("#bulk-progress").dataset.state = progress.State === "Running" ? "Running" : "Success";
  $("#bulk-progress-text").textContent = actionProgressText(progress);
  if (progress.State === "Running") return;
  $("#bulk-stop").hidden = true;
  if (progress.Results) {
    cancelRun("bulk-poll");
    renderResults(progress.Results);
    clearSelection();
    $("#bulk-close").focus();
  }
}

function renderResults(results) {
  const sorted = sortedResults(results);
  const rows = sorted.slice(0, MAX_RESULT_ROWS).map((result) => element("tr", { dataset: { result: result.Result } },
    element("td", { class: "mono", text: result.ID }),
    element("td", {}, element("span", { class: `result result-${result.Result}`, text: RESULT_LABELS[result.Result] || result.Result })),
    element("td", { text: result.Reason || "" })));
  if (sorted.length > MAX_RESULT_ROWS) {
    rows.push(element("tr", { class: "placeholder" },
      element("td", { colspan: 3, text: `and ${sorted.length - MAX_RESULT_ROWS} more (done ones last)` })));
  }
  if (!rows.length) rows.push(element("tr", { class: "placeholder" }, element("td", { colspan: 3, text: "No job was sent the action." })));
  $("#bulk-results-body").replaceChildren(...rows);
  $("#bulk-results-wrap").hidden = false;
}

export async function stopBulk() {
  const { bulk } = dashboard;
  if (!bulk.path) return;
  try {
    applyProgress(await stopBulkAction(bulk.path));
    showMessage("Stopping: the jobs already sent the action keep it.");
  } catch (error) {
    showMessage(`The action could not be stopped: ${error.message}`);
  }
}

export function closeBulk() {
  const dialog = $("#bulk");
  if (dialog.open) dialog.close();
}

/** The dialog closed: a run goes on (its jobs' rows follow it), the opener gets the focus back. */
export function bulkClosed() {
  const { bulk } = dashboard;
  if (bulk.opener && document.contains(bulk.opener)) bulk.opener.focus();
  bulk.opener = null;
}
