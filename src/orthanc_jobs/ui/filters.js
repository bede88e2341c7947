// The filter form and the address that mirrors it: filters, order, page and the open job survive a
// reload and can be shared.

import { exportUrl, readFeatures } from "./api.js";
import { dashboard } from "./dashboard.js";
import { $, element } from "./dom.js";
import { addressOfView, exportQuery, localInputOfUtc, viewFromAddress } from "./state.js";

/** Reads the view from the address. */
export function readAddress() {
  Object.assign(dashboard.view, viewFromAddress(window.location.hash));
}

/** Writes the view into the address, without a new entry in the history. */
export function writeAddress() {
  const hash = addressOfView(dashboard.view);
  const url = window.location.pathname + window.location.search + (hash ? `#${hash}` : "");
  window.history.replaceState(null, "", url);
}

/** Learns what the job-service offers, and shows the search fields and the export links if it does. */
export async function loadFeatures() {
  try {
    dashboard.features = await readFeatures();
  } catch {
    return; // an older service, or a proxy that hides the description: the jobs and their filters only
  }
  $("#search-fields").hidden = !dashboard.features.search;
  $("#exports").hidden = !dashboard.features.export;
}

/** The time fields, by the view's key they fill (data-filter). */
export const timeFields = () => document.querySelectorAll("#filters input[data-filter]");

/** Shows the view in the form, in the table's header and in the export links. */
export function syncControls() {
  const { view } = dashboard;
  $("#filter-status").value = view.status;
  $("#filter-type").value = view.type;
  $("#filter-q").value = view.q;
  $("#filter-resource").value = view.resource;
  for (const field of timeFields()) field.value = localInputOfUtc(view[field.dataset.filter]);
  for (const format of ["csv", "json"]) $(`#export-${format}`).href = exportUrl(exportQuery(view, format));
  ensureServerOption(view.server);
  $("#filter-server").value = view.server;
  $("#sort").value = view.sort;
  $("#limit").value = String(view.limit);
  const descending = view.sort === "desc";
  $("#created-header").setAttribute("aria-sort", descending ? "descending" : "ascending");
  $("#sort-arrow").textContent = descending ? "↓" : "↑";
  $("#sort-toggle").title = descending ? "Newest first; click for oldest first" : "Oldest first; click for newest first";
}

/** The server filter offers every server known, and the one the view names even if it is not known. */
export function renderServerOptions() {
  const select = $("#filter-server");
  const { view, servers } = dashboard;
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

/** The type filter suggests every type seen. */
export function renderTypes() {
  const list = $("#known-types");
  const { seenTypes } = dashboard;
  if (list.options.length === seenTypes.size) return;
  list.replaceChildren(...[...seenTypes].sort().map((type) => element("option", { value: type })));
}
