// The dashboard's rules, apart from the page: Orthanc's job states and the actions each allows, what the
// jobs table shows (filters, order, page) and how the address spells it, Orthanc's time format.
// No DOM and no network: tests/unit/ui/ runs these in Node and checks them against core/model.py.

/** Orthanc's job states, in the order the dashboard shows them. */
export const STATES = Object.freeze(["Pending", "Running", "Paused", "Retry", "Success", "Failure"]);
/** A job in one of these states has ended: it changes no more unless it is resubmitted. */
export const TERMINAL_STATES = Object.freeze(["Success", "Failure"]);

export const isTerminal = (state) => TERMINAL_STATES.includes(state);
export const isUnfinished = (state) => STATES.includes(state) && !isTerminal(state);

/** Which action Orthanc accepts in which state (it answers the others 400). */
export const ACTION_STATES = Object.freeze({
  pause: Object.freeze(["Pending", "Running", "Retry"]),
  resume: Object.freeze(["Paused"]),
  cancel: Object.freeze(["Pending", "Running", "Paused", "Retry"]),
  resubmit: Object.freeze(["Failure"]),
});
export const ACTIONS = Object.freeze(Object.keys(ACTION_STATES));

/** The job types of Orthanc itself, offered by the type filter before any job of them is seen. */
export const KNOWN_TYPES = Object.freeze([
  "Archive", "Media", "ResourceModification", "MergeStudy", "SplitStudy", "DicomModalityStore",
  "DicomMoveScu", "OrthancPeerStore", "StorageCommitmentScp",
]);
/** The types whose successful jobs leave a ZIP archive to download. */
const ARCHIVE_TYPES = Object.freeze(["Archive", "Media"]);

/** Its owner no longer holds the job: it is read from the job-service's history, and can change no more. */
const isHistoryOnly = (job) => Boolean(job && job.Server && job.Server.HistoryOnly);

/** Whether the dashboard offers `action` on `job`: its state allows it, and its owner still holds it. */
export function allowsAction(job, action) {
  if (!job || isHistoryOnly(job) || !Object.hasOwn(ACTION_STATES, action)) return false;
  return ACTION_STATES[action].includes(job.State);
}

/** Whether the job's archive can be downloaded: a successful archive job its owner still holds. */
export function offersArchive(job) {
  return Boolean(job) && job.State === "Success" && ARCHIVE_TYPES.includes(job.Type) && !isHistoryOnly(job);
}

const JOB_ID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** Orthanc's job ids are UUIDs, in either case. */
export const isJobId = (value) => typeof value === "string" && JOB_ID.test(value);

// ---------------------------------------------------------------------------------------------------
// The view: what the jobs table shows, mirrored in the address (#status=Running&page=2...)

export const PAGE_SIZES = Object.freeze([10, 25, 50, 100]);
const DEFAULT_PAGE_SIZE = 25;

/** All jobs, newest first, the first page, no job open. `page` counts from 0; the address from 1. */
export function defaultView() {
  return { status: "", type: "", server: "", sort: "desc", limit: DEFAULT_PAGE_SIZE, page: 0, job: "" };
}

/** The view an address's fragment asks for; whatever it spells wrong falls back to the default. */
export function viewFromAddress(hash) {
  const params = new URLSearchParams(String(hash || "").replace(/^#/, ""));
  const status = (params.get("status") || "").toLowerCase();
  const limit = Number(params.get("limit"));
  const job = params.get("job") || "";
  return {
    status: STATES.find((state) => state.toLowerCase() === status) || "",
    type: params.get("type") || "",
    server: params.get("server") || "",
    sort: params.get("sort") === "asc" ? "asc" : "desc",
    limit: PAGE_SIZES.includes(limit) ? limit : DEFAULT_PAGE_SIZE,
    page: Math.max(0, (parseInt(params.get("page") || "1", 10) || 1) - 1),
    job: isJobId(job) ? job : "",
  };
}

/** The fragment of the address that spells `view` (without "#"), leaving out what is the default. */
export function addressOfView(view) {
  const params = new URLSearchParams();
  if (view.status) params.set("status", view.status);
  if (view.type) params.set("type", view.type);
  if (view.server) params.set("server", view.server);
  if (view.sort !== "desc") params.set("sort", view.sort);
  if (view.limit !== DEFAULT_PAGE_SIZE) params.set("limit", String(view.limit));
  if (view.page > 0) params.set("page", String(view.page + 1));
  if (view.job) params.set("job", view.job);
  return params.toString();
}

/** The query of `GET /jobs` that lists the view's jobs, as the API filters them (expanded). */
export function jobsQuery(view) {
  const params = new URLSearchParams();
  params.set("expand", "");
  if (view.status) params.set("status", view.status);
  if (view.type) params.set("type", view.type);
  if (view.server) params.set("server", view.server);
  return params;
}

/** Whether the API would list `job` under the view's filters: its state, its type in any case, and its
 * server by name or by URL. */
export function matchesView(job, view) {
  if (view.status && job.State !== view.status) return false;
  if (view.type && String(job.Type).toLowerCase() !== view.type.toLowerCase()) return false;
  if (view.server) {
    const owner = job.Server || {};
    if (owner.Name !== view.server && owner.Url !== view.server) return false;
  }
  return true;
}

export const hasFilters = (view) => Boolean(view.status || view.type || view.server);

// ---------------------------------------------------------------------------------------------------
// Pages

/** How many pages `total` jobs fill; an empty list still has one. */
export const pageCount = (total, limit) => Math.max(1, Math.ceil(total / limit));
/** The index of the last page (from 0). */
export const lastPage = (total, limit) => pageCount(total, limit) - 1;

/**
 * The part of the API's order (oldest first) that a page shows: page `page` of `limit` jobs when `total`
 * jobs match, in the view's order. Newest first is the end of the API's order, to be reversed.
 */
export function pageSlice(view, total) {
  if (view.sort === "asc") return { offset: view.page * view.limit, limit: view.limit };
  const end = Math.max(0, total - view.page * view.limit);
  const offset = Math.max(0, end - view.limit);
  return { offset, limit: end - offset };
}

/** The page that, with `limit` jobs a page, holds the first job of the view's current page. */
export const pageForLimit = (view, limit) => Math.floor((view.page * view.limit) / limit);

/** The pager's line: which jobs of how many the page shows, in which order. */
export function pageSummary(view, total, shown) {
  if (!shown) return `0 of ${total} jobs`;
  const first = view.page * view.limit + 1;
  const order = view.sort === "desc" ? "newest first" : "oldest first";
  const pages = pageCount(total, view.limit);
  return `Jobs ${first}–${first + shown - 1} of ${total}, ${order} · page ${view.page + 1} of ${pages}`;
}

// ---------------------------------------------------------------------------------------------------
// Orthanc's time format

const ORTHANC_TIME = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})(?:\.(\d+))?$/;

/** Orthanc's timestamps ("20240131T154500.123456", UTC) as a Date; null for anything else. */
export function parseOrthancTime(value) {
  const match = ORTHANC_TIME.exec(typeof value === "string" ? value : "");
  if (!match) return null;
  const [, year, month, day, hour, minute, second, fraction = "0"] = match;
  const ms = Math.round(Number(`0.${fraction}`) * 1000);
  return new Date(Date.UTC(+year, +month - 1, +day, +hour, +minute, +second, ms));
}

const pad = (number) => String(number).padStart(2, "0");

/** A date in the browser's time zone, to the second: "2024-01-31 16:45:00"; "" for none. */
export function formatDate(date) {
  if (!date) return "";
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())} ` +
    `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}`;
}

/** A time of day in the browser's time zone, to the minute: "16:45". */
export const formatClock = (date) => `${pad(date.getHours())}:${pad(date.getMinutes())}`;
