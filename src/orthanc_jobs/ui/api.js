// What the dashboard asks of the cluster: Orthanc's job routes and the job-service's own, and its event
// stream. Every request is same-origin and carries the browser's Basic credentials.

/** Where Orthanc's REST API is, from the root of the load balancer. */
const ORTHANC_PREFIX = "/orthanc";
/** Where the job-service's own routes are, from the root of the load balancer. */
const SERVICE_PREFIX = "/orthanc-jobs";

// The page is served at <load balancer>/orthanc-jobs/ui/: everything else is found from there.
const ROOT = (() => {
  const path = window.location.pathname;
  const at = path.lastIndexOf(SERVICE_PREFIX + "/ui");
  return at >= 0 ? path.slice(0, at) : "";
})();
const ORTHANC = ROOT + ORTHANC_PREFIX;
const SERVICE = ROOT + SERVICE_PREFIX;

/**
 * A path of the load balancer as an absolute URL of the page's origin. The page may have been opened with
 * credentials in its address (http://user:password@host/...), as Orthanc Explorer often is: a request
 * relative to it would carry them in its URL, which fetch() and EventSource refuse. The origin has none;
 * the browser sends the credentials it was given for it, as it does for every request of the page.
 */
const absolute = (path) => new URL(path, window.location.origin).href;

/** A refused or failed request: the API's own Message, the HTTP status and the body. */
class ApiError extends Error {
  constructor(message, status, body) {
    super(message);
    this.status = status;
    this.body = body;
  }
}

/** A JSON request; errors carry the API's own Message. */
async function request(url, options = {}) {
  const response = await fetch(absolute(url), {
    credentials: "same-origin",
    cache: "no-store",
    ...options,
    headers: { Accept: "application/json", ...(options.headers || {}) },
  });
  const text = await response.text();
  let body = null;
  if (text) {
    try {
      body = JSON.parse(text);
    } catch {
      body = text;
    }
  }
  if (!response.ok) {
    const message = body && typeof body === "object" && body.Message
      ? body.Message
      : `${response.status} ${response.statusText || "error"}`.trim();
    throw new ApiError(message, response.status, body);
  }
  return { body, response };
}

const jobUrl = (id) => `${ORTHANC}/jobs/${encodeURIComponent(id)}`;

/** `GET /jobs?...`: one slice of the jobs matching `query`, and how many match in all. */
export async function readJobs(query, offset, limit) {
  const params = new URLSearchParams(query);
  params.set("offset", String(offset));
  params.set("limit", String(limit));
  const { body, response } = await request(`${ORTHANC}/jobs?${params}`);
  const count = Number(response.headers.get("X-Total-Count"));
  const jobs = Array.isArray(body) ? body : [];
  return { jobs, total: response.headers.has("X-Total-Count") && Number.isFinite(count) ? count : jobs.length };
}

/** `GET /jobs/{id}`: the job as Orthanc describes it, with its `Server`. */
export async function readJob(id) {
  return (await request(jobUrl(id))).body;
}

/** `POST /jobs/{id}/{action}` (pause, resume, cancel, resubmit), on the job's owner. */
export async function postJobAction(id, action) {
  await request(`${jobUrl(id)}/${action}`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: "{}",
  });
}

/** Where the ZIP archive of a successful Archive or Media job is downloaded. */
export const archiveUrl = (id) => `${jobUrl(id)}/archive`;

/** Every server of the cluster, with its status and its jobs by state. */
export async function readServers() {
  return (await request(`${SERVICE}/servers`)).body;
}

/** Jobs completed and failed per server, in buckets of `bucket` seconds over the last `seconds`. */
export async function readStats(bucket, seconds) {
  return (await request(`${SERVICE}/stats?bucket=${bucket}&window=${seconds}`)).body;
}

/** Jobs created per period of `bucket` seconds over the last `seconds`, by their state and type. */
export async function readJobsPerPeriod(bucket, seconds) {
  return (await request(`${SERVICE}/stats/jobs?bucket=${bucket}&window=${seconds}`)).body;
}

/** Waiting and running time percentiles of the jobs ended in the last `seconds`, per type. */
export async function readDurations(seconds) {
  return (await request(`${SERVICE}/stats/durations?window=${seconds}`)).body;
}

/** Every webhook and its deliveries. */
export async function readWebhooks() {
  return (await request(`${SERVICE}/webhooks`)).body;
}

/**
 * What this job-service offers beyond the jobs themselves, from its OpenAPI description: the listing's
 * search (q, resource, time ranges), the export, the webhooks. A dashboard newer than its service (a
 * rolling upgrade) then hides what would be answered 404 or ignored.
 */
export async function readFeatures() {
  const { paths = {} } = (await request(`${SERVICE}/openapi.json`)).body || {};
  const listing = (((paths["/jobs"] || {}).get || {}).parameters || []).map((parameter) => parameter.name);
  return {
    search: listing.includes("q"),
    export: Object.hasOwn(paths, `${SERVICE_PREFIX}/export`),
    webhooks: Object.hasOwn(paths, `${SERVICE_PREFIX}/webhooks`),
  };
}

/** Where the jobs a query matches are downloaded as a file (`format` in the query: csv or json). */
export const exportUrl = (query) => `${SERVICE}/export?${query}`;

const postJson = (url, body) => request(url, {
  method: "POST",
  headers: { "Content-Type": "application/json" },
  body: JSON.stringify(body),
});

/** `POST /orthanc-jobs/actions`: with `expected` unset, the dry run (what it would do, what is refused);
 * with the dry run's count of jobs accepted, the run itself (its ID and Path). */
export async function postBulkAction(action, filter, expected) {
  const body = expected === undefined
    ? { Action: action, Filter: filter, DryRun: true }
    : { Action: action, Filter: filter, Expected: expected };
  return (await postJson(`${SERVICE}/actions`, body)).body;
}

/** Where a run stands (`path` as the service gave it: /orthanc-jobs/actions/<id>). */
export async function readBulkAction(path) {
  return (await request(ROOT + path)).body;
}

/** Stops a run: no more jobs are sent the action. */
export async function stopBulkAction(path) {
  return (await postJson(`${ROOT + path}/cancel`, {})).body;
}

/**
 * Follows the job-service's event stream: `handlers` get the data of each event by its type (job,
 * server, removed, reset, action); `onConnection(state, retrySeconds)` hears "live", "reconnecting" and
 * "offline"; `onResumed()` is called when the stream opens again after an interruption.
 *
 * After any interruption a new stream is opened and the page reads its lists again (`onResumed`), rather
 * than letting the browser resume with Last-Event-ID: that also covers a job-service that restarted
 * meanwhile (its event ids start again from 1) and answers that are not a stream (502).
 */
export function followEvents(handlers, { onConnection, onResumed }) {
  let source = null;
  let retryDelay = 1000;
  let interrupted = false;

  function connect() {
    source = new EventSource(absolute(`${SERVICE}/events`));
    source.addEventListener("open", () => {
      onConnection("live");
      retryDelay = 1000;
      if (interrupted) { // changes may have been missed meanwhile
        interrupted = false;
        onResumed();
      }
    });
    source.addEventListener("error", (event) => {
      if (event.target !== source) return;
      interrupted = true;
      source.close();
      if (retryDelay > 1000) onConnection("offline", Math.round(retryDelay / 1000));
      else onConnection("reconnecting");
      setTimeout(connect, retryDelay);
      retryDelay = Math.min(retryDelay * 2, 30000);
    });
    for (const [type, handler] of Object.entries(handlers)) {
      source.addEventListener(type, (event) => {
        let data;
        try {
          data = JSON.parse(event.data);
        } catch {
          return;
        }
        handler(data);
      });
    }
  }

  connect();
}
