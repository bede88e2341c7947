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

/** The actions on many jobs (POST /orthanc-jobs/actions): those of one job, and delete (a finished job,
 * on Orthanc 1.12.2 and later; the service's dry run says which servers refuse). */
export const BULK_ACTIONS = Object.freeze([...ACTIONS, "delete"]);

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
// The view: what the jobs table shows, mirrored in the address (#status=Running&q=CT&page=2...)

export const PAGE_SIZES = Object.freeze([10, 25, 50, 100]);
const DEFAULT_PAGE_SIZE = 25;

/** The filters of the listing (GET /jobs) the view holds: its key in the view, and its query parameter's
 * name, which is also its name in the address and in an action's Filter. Times are UTC, ISO 8601. */
export const FILTERS = Object.freeze([
  ["status", "status"], ["type", "type"], ["server", "server"], ["q", "q"], ["resource", "resource"],
  ["createdSince", "created-since"], ["createdUntil", "created-until"],
  ["completedSince", "completed-since"], ["completedUntil", "completed-until"],
].map(([key, param]) => Object.freeze({ key, param })));
const TIME_FILTERS = Object.freeze(["createdSince", "createdUntil", "completedSince", "completedUntil"]);

/** All jobs, newest first, the first page, no job open. `page` counts from 0; the address from 1. */
export function defaultView() {
  const view = { sort: "desc", limit: DEFAULT_PAGE_SIZE, page: 0, job: "" };
  for (const { key } of FILTERS) view[key] = "";
  return view;
}

const RESOURCE_ID = /^[0-9a-f]{8}(?:-[0-9a-f]{8}){4}$/i;

/** Orthanc's resource ids (a patient's, study's, series' or instance's): five groups of 8 hex digits. */
export const isResourceId = (value) => typeof value === "string" && RESOURCE_ID.test(value);

// A UTC time as the address and the API spell it: ISO 8601 to the minute, "2025-01-31T14:45Z".
const UTC_MINUTE = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2})Z$/;
const LOCAL_MINUTE = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2})$/;

/** A time field's value (the browser's time zone, "2025-01-31T15:45") as UTC: "2025-01-31T14:45Z"; ""
 * for an empty or wrong one. */
export function utcOfLocalInput(value) {
  const match = LOCAL_MINUTE.exec(typeof value === "string" ? value : "");
  if (!match) return "";
  const [, year, month, day, hour, minute] = match.map(Number);
  const date = new Date(year, month - 1, day, hour, minute);
  if (Number.isNaN(date.getTime())) return "";
  return `${date.toISOString().slice(0, 16)}Z`;
}

/** The reverse: a UTC time of the address as a time field's value, in the browser's time zone. */
export function localInputOfUtc(value) {
  const date = parseUtcMinute(value);
  if (!date) return "";
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}T` +
    `${pad(date.getHours())}:${pad(date.getMinutes())}`;
}

function parseUtcMinute(value) {
  const match = UTC_MINUTE.exec(typeof value === "string" ? value : "");
  if (!match) return null;
  const [, year, month, day, hour, minute] = match.map(Number);
  const date = new Date(Date.UTC(year, month - 1, day, hour, minute));
  return date.getUTCMonth() === month - 1 && date.getUTCDate() === day && hour < 24 ? date : null;
}

/** The view an address's fragment asks for; whatever it spells wrong falls back to the default. */
export function viewFromAddress(hash) {
  const params = new URLSearchParams(String(hash || "").replace(/^#/, ""));
  const status = (params.get("status") || "").toLowerCase();
  const limit = Number(params.get("limit"));
  const job = params.get("job") || "";
  const resource = (params.get("resource") || "").trim();
  const view = {
    status: STATES.find((state) => state.toLowerCase() === status) || "",
    type: params.get("type") || "",
    server: params.get("server") || "",
    q: (params.get("q") || "").trim(),
    resource: isResourceId(resource) ? resource.toLowerCase() : "",
    sort: params.get("sort") === "asc" ? "asc" : "desc",
    limit: PAGE_SIZES.includes(limit) ? limit : DEFAULT_PAGE_SIZE,
    page: Math.max(0, (parseInt(params.get("page") || "1", 10) || 1) - 1),
    job: isJobId(job) ? job : "",
  };
  for (const { key, param } of FILTERS.filter(({ key }) => TIME_FILTERS.includes(key))) {
    const value = params.get(param) || "";
    view[key] = parseUtcMinute(value) ? value : "";
  }
  return view;
}

/** The fragment of the address that spells `view` (without "#"), leaving out what is the default. */
export function addressOfView(view) {
  const params = filterParams(view);
  if (view.sort !== "desc") params.set("sort", view.sort);
  if (view.limit !== DEFAULT_PAGE_SIZE) params.set("limit", String(view.limit));
  if (view.page > 0) params.set("page", String(view.page + 1));
  if (view.job) params.set("job", view.job);
  return params.toString();
}

/** The view's filters, by the listing's parameter names (those set only). */
function filterParams(view) {
  const params = new URLSearchParams();
  for (const { key, param } of FILTERS) if (view[key]) params.set(param, view[key]);
  return params;
}

/** The query of `GET /jobs` that lists the view's jobs, as the API filters them (expanded). */
export function jobsQuery(view) {
  const params = new URLSearchParams();
  params.set("expand", "");
  for (const [name, value] of filterParams(view)) params.set(name, value);
  return params;
}

/** The query of the export of the view's jobs (GET /orthanc-jobs/export): its filters, in its order. */
export function exportQuery(view, format) {
  const params = filterParams(view);
  params.set("format", format);
  return params;
}

/**
 * The Filter of an action on many jobs (POST /orthanc-jobs/actions): the jobs selected (`ids`), or every
 * job the view's filters match. The API wants at least one filter: every state stands for "all jobs".
 */
export function actionFilter(view, selection) {
  if (!selection.all) return { ids: [...selection.ids] };
  const filter = {};
  for (const [name, value] of filterParams(view)) filter[name] = name === "status" ? [value] : value;
  if (!Object.keys(filter).length) filter.status = [...STATES];
  return filter;
}

const jobTime = (value) => (typeof value === "string" ? value : "");
/** An Orthanc time as the minute it falls in, "2025-01-31T14:45Z", to compare with a filter's bounds. */
const minuteOf = (value) => {
  const date = parseOrthancTime(value);
  return date ? `${date.toISOString().slice(0, 16)}Z` : "";
};

/** Whether the API would list `job` under the view's filters: its state, its type in any case, its server
 * by name or by URL, its times (to the minute, bounds included); a text or resource searched for anywhere
 * in the job, in any case (the API searches fewer fields: a reload corrects the difference). */
export function matchesView(job, view) {
  if (view.status && job.State !== view.status) return false;
  if (view.type && String(job.Type).toLowerCase() !== view.type.toLowerCase()) return false;
  if (view.server) {
    const owner = job.Server || {};
    if (owner.Name !== view.server && owner.Url !== view.server) return false;
  }
  const created = minuteOf(jobTime(job.CreationTime));
  const completed = minuteOf(jobTime(job.CompletionTime));
  if (view.createdSince && !(created && created >= view.createdSince)) return false;
  if (view.createdUntil && !(created && created <= view.createdUntil)) return false;
  if (view.completedSince && !(completed && completed >= view.completedSince)) return false;
  if (view.completedUntil && !(completed && completed <= view.completedUntil)) return false;
  for (const text of [view.q, view.resource]) {
    if (text && !JSON.stringify(job).toLowerCase().includes(text.toLowerCase())) return false;
  }
  return true;
}

export const hasFilters = (view) => FILTERS.some(({ key }) => Boolean(view[key]));

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

/** Orthanc's time or ISO 8601 (the service's own answers) as a Date; null for anything else. */
export function parseAnyTime(value) {
  const orthanc = parseOrthancTime(value);
  if (orthanc || typeof value !== "string" || !/^\d{4}-\d{2}-\d{2}T/.test(value)) return orthanc;
  const time = Date.parse(value);
  return Number.isFinite(time) ? new Date(time) : null;
}

/** When a time was, as short as it stays clear: "16:45" today, "2024-01-31 16:45" another day. */
export function formatWhen(date, now = new Date()) {
  const sameDay = date.getFullYear() === now.getFullYear() && date.getMonth() === now.getMonth() &&
    date.getDate() === now.getDate();
  return sameDay ? formatClock(date) : `${formatDate(date).slice(0, 10)} ${formatClock(date)}`;
}

// ---------------------------------------------------------------------------------------------------
// Stuck jobs: running, their progress still for the service's ORTHANC_JOBS_STUCK_AFTER

/** Whether the service flags the job stuck (its Server field). */
export const isStuck = (job) => Boolean(job && job.State === "Running" && job.Server && job.Server.Stuck);

/** The stuck badge's text, "stuck since 16:45", or "" for a job that is not stuck. */
export function stuckLabel(job, now = new Date()) {
  if (!isStuck(job)) return "";
  const since = parseOrthancTime(job.Server.StuckSince);
  return since ? `stuck since ${formatWhen(since, now)}` : "stuck";
}

// ---------------------------------------------------------------------------------------------------
// Durations

/** Seconds as a person reads them: "< 0.1 s", "0.4 s", "12 s", "4 min 12 s", "2 h 5 min", "3 d 4 h"; "—" for none. */
export function formatDuration(seconds) {
  const value = Number(seconds);
  if (seconds === null || seconds === undefined || !Number.isFinite(value) || value < 0) return "—";
  if (value > 0 && value < 0.1) return "< 0.1 s";
  if (value < 10) return `${Number(value.toFixed(1))} s`;
  const whole = Math.round(value);
  const units = [["d", 86400], ["h", 3600], ["min", 60], ["s", 1]];
  const parts = [];
  let rest = whole;
  for (const [name, size] of units) {
    const count = Math.floor(rest / size);
    rest -= count * size;
    if (count || (parts.length && parts.length < 2)) parts.push(`${count} ${name}`);
    if (parts.length === 2) break;
  }
  if (parts.length === 2 && parts[1].startsWith("0 ")) parts.pop();
  return parts.join(" ");
}

// ---------------------------------------------------------------------------------------------------
// Actions on many jobs

const plural = (count, word) => `${count} ${word}${count === 1 ? "" : "s"}`;
const capitalized = (word) => `${word[0].toUpperCase()}${word.slice(1)}`;

/** What is selected, as the action bar says it. */
export function selectionText(selection, total) {
  if (selection.all) return `All ${plural(total, "job")} matching the filters selected`;
  return selection.ids.size ? `${plural(selection.ids.size, "job")} selected` : "";
}

/** The confirmation's question, from the dry run's answer: "Resubmit 300 jobs? 2 refused: the job is ..." */
export function confirmationText(summary) {
  const reasons = summary.RefusedReasons || [];
  const why = reasons.map((reason) => (reasons.length > 1 ? `${reason.Reason} (${reason.Count})` : reason.Reason))
    .join("; ");
  if (!summary.Accepted) {
    const nothing = `Nothing to ${summary.Action}:`;
    return summary.Matching ? `${nothing} all ${plural(summary.Matching, "job")} refused: ${why}.` : `${nothing} no job matches.`;
  }
  const question = `${capitalized(summary.Action)} ${plural(summary.Accepted, "job")}?`;
  return summary.Refused ? `${question} ${summary.Refused} refused: ${why}.` : question;
}

/** Where a run stands: "120 of 300 jobs · 118 done · 2 refused · 0 owner unreachable". */
export function actionProgressText(progress) {
  const head = progress.State === "Running"
    ? `${progress.Processed} of ${plural(progress.Total, "job")}`
    : `${progress.State === "Cancelled" ? "Stopped" : "Finished"}: ${progress.Processed} of ${plural(progress.Total, "job")}`;
  return `${head} · ${progress.Done} done · ${progress.Refused} refused · ${progress.Unreachable} owner unreachable`;
}

/** Whether a newer word on a run (an event, a poll) replaces what the page shows: never one that went
 * backwards (events and polls cross), and the final results once. */
export function isNewerProgress(shown, next) {
  if (!shown) return true;
  if (shown.State !== "Running") return false;
  return next.State !== "Running" || next.Processed >= shown.Processed;
}

const RESULT_ORDER = Object.freeze({ unreachable: 0, refused: 1, done: 2 });

/** A run's results, those that were not done first. */
export const sortedResults = (results) =>
  [...(results || [])].sort((a, b) => (RESULT_ORDER[a.Result] ?? 3) - (RESULT_ORDER[b.Result] ?? 3));

// ---------------------------------------------------------------------------------------------------
// Statistics: jobs created per period by state, and where time goes

/** The periods the charts offer: the last 24 hours by hour, the last 7 days by day. */
export const PERIODS = Object.freeze({
  day: Object.freeze({ window: 86400, bucket: 3600, label: "last 24 hours, by hour" }),
  week: Object.freeze({ window: 7 * 86400, bucket: 86400, label: "last 7 days, by day" }),
});

/** The bars of /orthanc-jobs/stats/jobs: for each period, how many jobs of `type` ("" for every type) are
 * in each state, stacked in the order of STATES; `max` the highest bar. */
export function stackPeriods(stats, type = "") {
  let max = 0;
  const bars = (stats && Array.isArray(stats.Periods) ? stats.Periods : []).map((period) => {
    const counts = {};
    let total = 0;
    for (const state of STATES) {
      const byType = (period.States || {})[state] || {};
      const count = type
        ? Number(byType[type] || 0)
        : Object.values(byType).reduce((sum, value) => sum + Number(value || 0), 0);
      counts[state] = count;
      total += count;
    }
    max = Math.max(max, total);
    return { time: Date.parse(period.Time), counts, total };
  });
  return { bars, max };
}

/** The sums of each state over every bar. */
export function stateTotals(bars) {
  const totals = Object.fromEntries(STATES.map((state) => [state, 0]));
  for (const bar of bars) for (const state of STATES) totals[state] += bar.counts[state];
  return totals;
}

// ---------------------------------------------------------------------------------------------------
// Webhooks

/** Whether a webhook's deliveries need a look: alerts were given up, or its last attempt failed after its
 * last delivery. */
export function webhookFailing(hook) {
  if (Number(hook.Failed || 0) > 0) return true;
  const failed = parseAnyTime(hook.LastFailureAt);
  const delivered = parseAnyTime(hook.LastDeliveredAt);
  return Boolean(failed && (!delivered || failed > delivered));
}
