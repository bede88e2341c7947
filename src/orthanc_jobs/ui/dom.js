// Building blocks of the page: elements, badges, progress bars, times, and the banner of problems.

import { dashboard } from "./dashboard.js";
import { formatDate, parseOrthancTime, stuckLabel } from "./state.js";

export const $ = (selector) => document.querySelector(selector);

/** An element with its attributes (`class`, `text` and `dataset` are shortcuts) and its children. */
export function element(tag, attributes = {}, ...children) {
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

export function svg(tag, attributes = {}, text) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, String(value));
  if (text !== undefined) node.textContent = text;
  return node;
}

/** A time cell: local time shown, UTC in the tooltip and in a machine-readable attribute. */
export function timeElement(value) {
  const date = parseOrthancTime(value);
  if (!date) return element("span", { class: "muted", text: "—" });
  return element("time", { datetime: date.toISOString(), title: `${date.toISOString()} (UTC)` }, formatDate(date));
}

export function stateBadge(state) {
  return element("span", { class: `badge state-${String(state).toLowerCase()}`, text: state });
}

/** "stuck since 16:45" for a running job whose progress has not moved for a while; null for others. */
export function stuckBadge(job) {
  const label = stuckLabel(job);
  if (!label) return null;
  const since = parseOrthancTime(job.Server.StuckSince);
  const title = `Running, its progress still since ${since ? formatDate(since) : "a while"}: a modality that ` +
    "stopped answering, or a job waiting on something that does not come";
  return element("span", { class: "tag stuck", text: label, title });
}

const STATUS_LABELS = { alive: "alive", "not-responding": "not responding", stopped: "stopped" };

export function statusBadge(status) {
  return element("span", { class: `status status-${status}` },
    element("span", { class: "dot", "aria-hidden": "true" }), STATUS_LABELS[status] || status || "unknown");
}

const percentOf = (value) => Math.max(0, Math.min(100, Number(value) || 0));

export function progressBar(value, label) {
  const percent = percentOf(value);
  const bar = element("div", {
    class: "progress", role: "progressbar", "aria-valuemin": 0, "aria-valuemax": 100,
    "aria-valuenow": percent, "aria-label": label,
  }, element("div", { class: "progress-fill" }));
  bar.firstChild.style.width = `${percent}%`;
  return element("div", { class: "progress-cell" }, bar, element("span", { class: "pct", text: `${percent} %` }));
}

/** Moves an existing progress bar (so that it glides); false if there is none. */
export function setProgress(container, value) {
  const bar = container.querySelector(".progress");
  if (!bar) return false;
  const percent = percentOf(value);
  bar.setAttribute("aria-valuenow", String(percent));
  bar.firstChild.style.width = `${percent}%`;
  container.querySelector(".pct").textContent = `${percent} %`;
  return true;
}

/** Shows in the banner what could not be read (`message`), or that it can be again (null). */
export function setProblem(key, message) {
  const { problems } = dashboard;
  if (message) problems.set(key, message);
  else problems.delete(key);
  $("#banner").hidden = problems.size === 0;
  $("#banner-text").textContent = [...problems.values()].join(" · ");
}

export function dismissProblems() {
  dashboard.problems.clear();
  setProblem("", null);
}
