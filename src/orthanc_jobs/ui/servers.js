// The cluster overview: every server, its status and its jobs by state, and the page's summary line.

import { readServers } from "./api.js";
import { dashboard, runOnce } from "./dashboard.js";
import { $, element, setProblem, statusBadge } from "./dom.js";
import { renderServerOptions } from "./filters.js";
import { STATES, formatDate, isUnfinished, parseOrthancTime } from "./state.js";

// A job changed state: its server's counts did too. Without a `server` event by then, they are read.
const SERVER_CHECK_MS = 1000;

export async function loadServers() {
  try {
    const entries = await readServers();
    dashboard.servers.clear();
    for (const entry of entries) dashboard.servers.set(entry.Url, entry);
    dashboard.serverChecks.clear();
    setProblem("servers", null);
  } catch (error) {
    setProblem("servers", `Servers could not be read: ${error.message}`);
  }
  renderServers();
}

/** A server's entry, from the event stream. */
export function updateServer(entry) {
  dashboard.servers.set(entry.Url, entry);
  dashboard.serverChecks.delete(entry.Url);
  renderServers();
}

/** A job changed state: its server's counts changed. If no `server` event says so soon, read them. */
export function expectServerUpdate(url) {
  if (!url) return;
  if (!dashboard.serverChecks.has(url)) dashboard.serverChecks.set(url, Date.now());
  runOnce("server-check", SERVER_CHECK_MS, () => {
    if (dashboard.serverChecks.size) loadServers();
  });
}

/** A count of jobs, as a button that shows those jobs (the app listens to the table's clicks). */
function countButton(entry, state, count) {
  if (!count) return element("span", { class: "zero", text: "0" });
  return element("button", {
    type: "button", class: "count-link", text: String(count), dataset: { state },
    "aria-label": `Show the ${count} ${state} job${count === 1 ? "" : "s"} of ${entry.Name}`,
  });
}

function renderServers() {
  const body = $("#servers-body");
  const entries = [...dashboard.servers.values()]
    .sort((a, b) => a.Name.localeCompare(b.Name) || a.Url.localeCompare(b.Url));
  const totals = Object.fromEntries(STATES.map((state) => [state, 0]));
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
    const lastSeen = parseOrthancTime(entry.LastSeen);
    const status = statusBadge(entry.Status);
    status.title = lastSeen ? `Last heard of at ${formatDate(lastSeen)}` : "";
    const cells = STATES.map((state) => {
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
    ...STATES.map((state) => element("td", { class: "num", text: String(totals[state]) })),
    element("td", { class: "num total", text: String(grand) })));
  const unfinished = STATES.filter(isUnfinished).reduce((sum, state) => sum + totals[state], 0);
  $("#summary").textContent = `${entries.length} server${entries.length === 1 ? "" : "s"} · ${grand} jobs · ` +
    `${totals.Running} running · ${unfinished - totals.Running} waiting · ${totals.Failure} failed`;
  renderServerOptions();
}
