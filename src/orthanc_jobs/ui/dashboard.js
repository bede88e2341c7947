// Everything the page holds between two events, in one object: the other modules read it and change it
// here or through the functions below, never through bindings of their own.

import { KNOWN_TYPES, defaultView } from "./state.js";

// Jobs whose last state the page remembers (to tell state changes from progress); beyond, it forgets.
const MAX_REMEMBERED_STATES = 50000;

export const dashboard = {
  /** What the jobs table shows; mirrored in the address. Changed in place, never replaced. */
  view: defaultView(),
  /** Jobs matching the filters (the API's X-Total-Count). */
  total: 0,
  /** Jobs of the current page, in display order, and their rows by job id. */
  rows: [],
  rowElements: new Map(),
  /** Increases with every list request: late answers of older ones are dropped. */
  jobsRequest: 0,
  /** When the jobs were last read (ms), to space the reloads that events ask for. */
  lastReload: 0,
  /** Server URL -> its entry of /orthanc-jobs/servers. */
  servers: new Map(),
  /** Server URL -> when a job of it changed state, until a `server` event or a read brings its counts. */
  serverChecks: new Map(),
  /** Job id -> the last state seen of it (events, lists). */
  lastStates: new Map(),
  /** Job types offered by the type filter: Orthanc's own and every one seen. */
  seenTypes: new Set(KNOWN_TYPES),
  /** The job the detail dialog shows (at first only its ID), and what to focus when it closes. */
  detail: { job: null, opener: null },
  /** The last answer of /orthanc-jobs/stats, drawn again when the chart's width changes. */
  stats: null,
  /** The last answers of /orthanc-jobs/stats/jobs and /stats/durations ("Where time goes"). */
  timeStats: null,
  durations: null,
  /** What the job-service offers beyond the jobs (see api.js readFeatures); none until it is read. */
  features: { search: false, export: false, webhooks: false },
  /** The jobs selected in the table (by id), or every job matching the filters (`all`). */
  selection: { ids: new Set(), all: false },
  /** The action on many jobs the dialog shows: its Filter, the dry run's answer, then the run's ID and
   * the last word on its progress (an `action` event or a read of its Path), and when that came. */
  bulk: {
    filter: null, summary: null, id: "", path: "", progress: null, heardAt: 0, opener: null,
    /** While the run's answer is awaited, the `action` events of runs by their ID (one may be it). */
    starting: false, early: new Map(),
  },
  /** What the page could not read, by what it was reading: shown in the banner. */
  problems: new Map(),
  /** Tasks waiting to run once (see `runOnce`), by name. */
  timers: new Map(),
};

/** Notes a job's state; true if its type is one the page had not seen yet. */
export function rememberJob(job) {
  const { lastStates, seenTypes } = dashboard;
  if (lastStates.size >= MAX_REMEMBERED_STATES && !lastStates.has(job.ID)) lastStates.clear();
  lastStates.set(job.ID, job.State);
  if (!job.Type || seenTypes.has(job.Type)) return false;
  seenTypes.add(job.Type);
  return true;
}

/** Whether the detail dialog shows the job `id`. */
export const showsDetailOf = (id) => Boolean(dashboard.detail.job && dashboard.detail.job.ID === id);

/** Runs `task` in `wait` ms, unless a task of this name is waiting already: several asks, one run. */
export function runOnce(name, wait, task) {
  if (dashboard.timers.has(name)) return;
  dashboard.timers.set(name, setTimeout(() => {
    dashboard.timers.delete(name);
    task();
  }, wait));
}

/** Drops the task of this name that waits to run, if any. */
export function cancelRun(name) {
  clearTimeout(dashboard.timers.get(name));
  dashboard.timers.delete(name);
}
