// The dashboard's rules (src/orthanc_jobs/ui/state.js), in Node: `node --test tests/unit/ui/`.
// tests/unit/ui/test_state_rules.py runs them with the rest of the suite.

import assert from "node:assert/strict";
import { describe, test } from "node:test";

import {
  ACTIONS, ACTION_STATES, BULK_ACTIONS, FILTERS, KNOWN_TYPES, PAGE_SIZES, PERIODS, STATES, TERMINAL_STATES,
  actionFilter, actionProgressText, addressOfView, allowsAction, confirmationText, defaultView, exportQuery,
  formatClock, formatDate, formatDuration, formatWhen, hasFilters, isJobId, isNewerProgress, isResourceId,
  isStuck, isTerminal, isUnfinished, jobsQuery, lastPage, localInputOfUtc, matchesView, offersArchive, pageCount,
  pageForLimit, pageSlice, pageSummary, parseAnyTime, parseOrthancTime, selectionText, sortedResults,
  stackPeriods, stateTotals, stuckLabel, utcOfLocalInput, viewFromAddress, webhookFailing,
} from "../../../src/orthanc_jobs/ui/state.js";

const ID = "0dc42374-3171-42f0-88f3-0bb3170f77ad";
const RESOURCE = "6e2c0ec2-5d99bd1c-e9d0e7d5-f1a2b0c3-8d4e5f60";
const job = (fields = {}) => ({
  ID, State: "Running", Type: "Archive", Server: { Name: "orthanc-1", Url: "http://127.0.0.1:8042" }, ...fields,
});
const view = (fields = {}) => ({ ...defaultView(), ...fields });
const allowed = (fields) => ACTIONS.filter((action) => allowsAction(job(fields), action));

describe("job states", () => {
  test("terminal: Success and Failure only", () => {
    assert.deepEqual(STATES.filter(isTerminal), ["Success", "Failure"]);
    assert.deepEqual([...TERMINAL_STATES], ["Success", "Failure"]);
  });

  test("unfinished: every other state Orthanc knows, and nothing it does not", () => {
    assert.deepEqual(STATES.filter(isUnfinished), ["Pending", "Running", "Paused", "Retry"]);
    for (const state of ["", "running", "Unknown", undefined, null]) assert.equal(isUnfinished(state), false);
    for (const state of ["success", "Unknown", undefined]) assert.equal(isTerminal(state), false);
  });

  test("the rules cannot be changed by a caller", () => {
    assert.throws(() => STATES.push("Lost"), TypeError);
    assert.throws(() => TERMINAL_STATES.push("Paused"), TypeError);
    assert.throws(() => ACTION_STATES.pause.push("Failure"), TypeError);
    assert.throws(() => { ACTION_STATES.resume = ["Running"]; }, TypeError);
  });
});

describe("actions", () => {
  test("each state allows the actions Orthanc accepts in it", () => {
    const table = Object.fromEntries(STATES.map((state) => [state, allowed({ State: state })]));
    assert.deepEqual(table, {
      Pending: ["pause", "cancel"],
      Running: ["pause", "cancel"],
      Paused: ["resume", "cancel"],
      Retry: ["pause", "cancel"],
      Success: [],
      Failure: ["resubmit"],
    });
  });

  test("every action is allowed in some state, and only in states Orthanc knows", () => {
    assert.deepEqual([...ACTIONS].sort(), ["cancel", "pause", "resubmit", "resume"]);
    for (const action of ACTIONS) {
      assert.ok(ACTION_STATES[action].length > 0, action);
      for (const state of ACTION_STATES[action]) assert.ok(STATES.includes(state), `${action}: ${state}`);
    }
  });

  test("no action on a job its server no longer holds", () => {
    for (const state of STATES) {
      assert.deepEqual(allowed({ State: state, Server: { Name: "orthanc-1", HistoryOnly: true } }), []);
    }
  });

  test("no action without a job, an unknown action or an unknown state", () => {
    assert.equal(allowsAction(null, "pause"), false);
    assert.equal(allowsAction(undefined, "cancel"), false);
    assert.equal(allowsAction(job(), "delete"), false);
    assert.equal(allowsAction(job(), "Pause"), false); // the API's actions are lower case
    assert.equal(allowsAction(job({ State: "Paused" }), "toString"), false); // not the prototype's keys
    assert.equal(allowsAction(job({ State: "Paused" }), "constructor"), false);
    assert.deepEqual(allowed({ State: "running" }), []);
    assert.deepEqual(allowed({ State: undefined }), []);
  });

  test("a job without a Server field, or a falsy HistoryOnly, is held by its server", () => {
    assert.deepEqual(allowed({ State: "Running", Server: undefined }), ["pause", "cancel"]);
    assert.deepEqual(allowed({ State: "Failure", Server: { HistoryOnly: false } }), ["resubmit"]);
  });

  test("an archive is offered for a successful Archive or Media job its server still holds", () => {
    assert.equal(offersArchive(job({ State: "Success", Type: "Archive" })), true);
    assert.equal(offersArchive(job({ State: "Success", Type: "Media" })), true);
    assert.equal(offersArchive(job({ State: "Success", Type: "ResourceModification" })), false);
    assert.equal(offersArchive(job({ State: "Success", Type: "archive" })), false);
    for (const state of STATES.filter((state) => state !== "Success")) {
      assert.equal(offersArchive(job({ State: state, Type: "Archive" })), false, state);
    }
    assert.equal(offersArchive(job({ State: "Success", Server: { HistoryOnly: true } })), false);
    assert.equal(offersArchive(null), false);
  });

  test("the types offered before any is seen include the archive types", () => {
    assert.ok(KNOWN_TYPES.includes("Archive") && KNOWN_TYPES.includes("Media"));
    assert.equal(new Set(KNOWN_TYPES).size, KNOWN_TYPES.length);
  });
});

describe("job ids", () => {
  test("UUIDs in either case", () => {
    assert.equal(isJobId(ID), true);
    assert.equal(isJobId(ID.toUpperCase()), true);
  });

  test("nothing else", () => {
    for (const value of [
      "", ` ${ID}`, `${ID}\n`, ID.slice(1), `${ID}0`, ID.replaceAll("-", ""), ID.replace("0", "g"),
      `${ID}/archive`, null, undefined, 42, { toString: () => ID },
    ]) {
      assert.equal(isJobId(value), false, String(value));
    }
  });
});

describe("the address", () => {
  test("an empty address is the default view", () => {
    for (const hash of ["", "#", undefined, null]) assert.deepEqual(viewFromAddress(hash), defaultView());
    assert.equal(addressOfView(defaultView()), "");
  });

  test("every setting survives a round trip", () => {
    const changed = {
      status: "Failure", type: "DicomMoveScu", server: "orthanc 2&3", sort: "asc", limit: 100, page: 4, job: ID,
      q: "CT head & neck", resource: RESOURCE, createdSince: "2025-01-31T14:45Z", createdUntil: "2025-02-01T00:00Z",
      completedSince: "2025-01-01T08:00Z", completedUntil: "2025-12-31T23:59Z",
    };
    assert.deepEqual(viewFromAddress(`#${addressOfView(changed)}`), changed);
    assert.deepEqual(viewFromAddress(addressOfView(changed)), changed); // with or without "#"
  });

  test("the default settings are left out", () => {
    assert.equal(addressOfView(view({ status: "Running", page: 1 })), "status=Running&page=2");
    assert.equal(addressOfView(view({ sort: "asc", limit: 10 })), "sort=asc&limit=10");
  });

  test("a state is found in any case; anything else means all states", () => {
    assert.equal(viewFromAddress("#status=running").status, "Running");
    assert.equal(viewFromAddress("#status=PAUSED").status, "Paused");
    assert.equal(viewFromAddress("#status=Lost").status, "");
    assert.equal(viewFromAddress("#status=").status, "");
  });

  test("only the page sizes offered, only asc or desc", () => {
    for (const size of PAGE_SIZES) assert.equal(viewFromAddress(`#limit=${size}`).limit, size);
    for (const wrong of ["0", "-10", "7", "25.5", "abc", ""]) {
      assert.equal(viewFromAddress(`#limit=${wrong}`).limit, 25, wrong);
    }
    assert.equal(viewFromAddress("#sort=asc").sort, "asc");
    assert.equal(viewFromAddress("#sort=ASC").sort, "desc");
    assert.equal(viewFromAddress("#sort=random").sort, "desc");
  });

  test("pages count from 1 in the address, from 0 in the view; nonsense is the first page", () => {
    assert.equal(viewFromAddress("#page=1").page, 0);
    assert.equal(viewFromAddress("#page=3").page, 2);
    assert.equal(viewFromAddress("#page=3rd").page, 2);
    for (const wrong of ["0", "-2", "abc", ""]) assert.equal(viewFromAddress(`#page=${wrong}`).page, 0, wrong);
  });

  test("the open job must be a job id", () => {
    assert.equal(viewFromAddress(`#job=${ID}`).job, ID);
    assert.equal(viewFromAddress("#job=../servers").job, "");
    assert.equal(viewFromAddress(`#job=${ID}x`).job, "");
  });

  test("the search fields are named as the listing's parameters", () => {
    assert.equal(
      addressOfView(view({ q: "Dr Who", createdSince: "2025-01-31T14:45Z", completedUntil: "2025-02-01T10:00Z" })),
      "q=Dr+Who&created-since=2025-01-31T14%3A45Z&completed-until=2025-02-01T10%3A00Z",
    );
    assert.deepEqual(FILTERS.map(({ param }) => param), [
      "status", "type", "server", "q", "resource", "created-since", "created-until", "completed-since",
      "completed-until",
    ]);
  });

  test("a time must be UTC to the minute, a resource an Orthanc id; anything else is no filter", () => {
    for (const wrong of ["2025-01-31", "2025-01-31T14:45", "2025-13-01T00:00Z", "2025-02-30T10:00Z", "now"]) {
      assert.equal(viewFromAddress(`#created-since=${wrong}`).createdSince, "", wrong);
    }
    assert.equal(viewFromAddress("#completed-until=2025-01-31T23:59Z").completedUntil, "2025-01-31T23:59Z");
    assert.equal(viewFromAddress(`#resource=${RESOURCE.toUpperCase()}`).resource, RESOURCE);
    assert.equal(viewFromAddress("#resource=12345").resource, "");
    assert.equal(viewFromAddress("#q=%20%20").q, "");
  });

  test("type and server are kept as written, decoded", () => {
    const parsed = viewFromAddress("#type=Dicom%20Move&server=http%3A%2F%2Fhost%3A8042");
    assert.equal(parsed.type, "Dicom Move");
    assert.equal(parsed.server, "http://host:8042");
  });
});

describe("filters", () => {
  test("the API query asks for expanded jobs and the view's filters only", () => {
    assert.equal(jobsQuery(defaultView()).toString(), "expand=");
    const query = jobsQuery(view({ status: "Retry", type: "Media", server: "orthanc-2", page: 3, sort: "asc" }));
    assert.equal(query.toString(), "expand=&status=Retry&type=Media&server=orthanc-2");
  });

  test("the search fields go to the API under their parameter names", () => {
    const query = jobsQuery(view({ q: "knee", resource: RESOURCE, createdSince: "2025-01-31T14:45Z" }));
    assert.equal(query.get("q"), "knee");
    assert.equal(query.get("resource"), RESOURCE);
    assert.equal(query.get("created-since"), "2025-01-31T14:45Z");
  });

  test("the export asks for the view's filters, not its page", () => {
    const query = exportQuery(view({ status: "Failure", q: "knee", page: 3, limit: 10 }), "csv");
    assert.equal(query.toString(), "status=Failure&q=knee&format=csv");
  });

  test("a job's times are judged to the minute, bounds included", () => {
    const created = job({ CreationTime: "20250131T144559.900000", CompletionTime: "20250131T150000.000000" });
    assert.equal(matchesView(created, view({ createdSince: "2025-01-31T14:45Z" })), true);
    assert.equal(matchesView(created, view({ createdUntil: "2025-01-31T14:45Z" })), true);
    assert.equal(matchesView(created, view({ createdSince: "2025-01-31T14:46Z" })), false);
    assert.equal(matchesView(created, view({ completedUntil: "2025-01-31T14:59Z" })), false);
    assert.equal(matchesView(job(), view({ completedSince: "2025-01-01T00:00Z" })), false); // not completed
  });

  test("a text or a resource is looked for in the whole job, in any case", () => {
    const described = job({ Content: { Description: "CT Head", Resources: [RESOURCE] } });
    assert.equal(matchesView(described, view({ q: "ct head" })), true);
    assert.equal(matchesView(described, view({ q: "MR" })), false);
    assert.equal(matchesView(described, view({ resource: RESOURCE })), true);
    assert.equal(hasFilters(view({ q: "x" })), true);
    assert.equal(hasFilters(view({ completedUntil: "2025-01-31T14:45Z" })), true);
  });

  test("no filter matches every job", () => {
    assert.equal(hasFilters(defaultView()), false);
    assert.equal(matchesView(job(), defaultView()), true);
    assert.equal(matchesView({ ID }, defaultView()), true);
  });

  test("the state matches exactly", () => {
    assert.equal(matchesView(job({ State: "Running" }), view({ status: "Running" })), true);
    assert.equal(matchesView(job({ State: "Pending" }), view({ status: "Running" })), false);
  });

  test("the type matches in any case, whole", () => {
    assert.equal(matchesView(job({ Type: "DicomMoveScu" }), view({ type: "dicommovescu" })), true);
    assert.equal(matchesView(job({ Type: "DicomMoveScu" }), view({ type: "DicomMove" })), false);
    assert.equal(matchesView(job({ Type: undefined }), view({ type: "Archive" })), false);
  });

  test("the server matches by name or by URL, as written", () => {
    assert.equal(matchesView(job(), view({ server: "orthanc-1" })), true);
    assert.equal(matchesView(job(), view({ server: "http://127.0.0.1:8042" })), true);
    assert.equal(matchesView(job(), view({ server: "Orthanc-1" })), false);
    assert.equal(matchesView(job(), view({ server: "orthanc-2" })), false);
    assert.equal(matchesView(job({ Server: undefined }), view({ server: "orthanc-1" })), false);
  });

  test("every filter must match", () => {
    const filters = view({ status: "Success", type: "Archive", server: "orthanc-1" });
    assert.equal(hasFilters(filters), true);
    assert.equal(matchesView(job({ State: "Success" }), filters), true);
    assert.equal(matchesView(job({ State: "Success", Type: "Media" }), filters), false);
    assert.equal(matchesView(job({ State: "Failure" }), filters), false);
  });
});

describe("pages", () => {
  test("an empty list has one page", () => {
    assert.equal(pageCount(0, 25), 1);
    assert.equal(lastPage(0, 25), 0);
  });

  test("a last page partly filled counts", () => {
    assert.equal(pageCount(25, 25), 1);
    assert.equal(pageCount(26, 25), 2);
    assert.equal(lastPage(101, 10), 10);
  });

  test("oldest first reads the API's order as it is", () => {
    assert.deepEqual(pageSlice(view({ sort: "asc", page: 2, limit: 10 }), 0), { offset: 20, limit: 10 });
  });

  test("newest first reads the end of the API's order", () => {
    assert.deepEqual(pageSlice(view({ page: 0, limit: 10 }), 95), { offset: 85, limit: 10 });
    assert.deepEqual(pageSlice(view({ page: 9, limit: 10 }), 95), { offset: 0, limit: 5 }); // the oldest 5
    assert.deepEqual(pageSlice(view({ page: 0, limit: 25 }), 7), { offset: 0, limit: 7 });
  });

  test("newest first, past the end or with no job: nothing to read", () => {
    assert.deepEqual(pageSlice(view({ page: 12, limit: 10 }), 95), { offset: 0, limit: 0 });
    assert.deepEqual(pageSlice(view(), 0), { offset: 0, limit: 0 });
  });

  test("a new page size keeps the first job shown on the page shown", () => {
    assert.equal(pageForLimit(view({ page: 3, limit: 25 }), 10), 7); // job 76 is on page 8 of 10
    assert.equal(pageForLimit(view({ page: 3, limit: 25 }), 100), 0);
    assert.equal(pageForLimit(view({ page: 0, limit: 10 }), 50), 0);
  });

  test("the pager's line", () => {
    assert.equal(pageSummary(view(), 0, 0), "0 of 0 jobs");
    assert.equal(pageSummary(view({ page: 1, limit: 10 }), 25, 10), "Jobs 11–20 of 25, newest first · page 2 of 3");
    assert.equal(pageSummary(view({ sort: "asc", page: 2, limit: 10 }), 25, 5),
      "Jobs 21–25 of 25, oldest first · page 3 of 3");
  });
});

describe("Orthanc's time format", () => {
  test("UTC, with or without a fraction of a second", () => {
    assert.equal(parseOrthancTime("20240131T154500.123456").toISOString(), "2024-01-31T15:45:00.123Z");
    assert.equal(parseOrthancTime("20240131T154500").toISOString(), "2024-01-31T15:45:00.000Z");
    assert.equal(parseOrthancTime("20240229T000000.5").toISOString(), "2024-02-29T00:00:00.500Z");
  });

  test("fractions rounded to the millisecond, carried into the next second", () => {
    assert.equal(parseOrthancTime("20240131T154500.000499").toISOString(), "2024-01-31T15:45:00.000Z");
    assert.equal(parseOrthancTime("20240131T154500.0015").toISOString(), "2024-01-31T15:45:00.002Z");
    assert.equal(parseOrthancTime("20241231T235959.9996").toISOString(), "2025-01-01T00:00:00.000Z");
  });

  test("what Python's strftime('%Y%m%dT%H%M%S.%f') writes", () => {
    const written = new Date(Date.UTC(1999, 11, 31, 23, 59, 58, 7)).toISOString()
      .replace(/[-:]/g, "").replace("Z", "000");
    assert.equal(written, "19991231T235958.007000");
    assert.equal(parseOrthancTime(written).getTime(), Date.UTC(1999, 11, 31, 23, 59, 58, 7));
  });

  test("anything else is no time", () => {
    for (const value of [
      "", null, undefined, 20240131, "2024-01-31T15:45:00Z", "20240131T154500Z", "20240131T1545",
      "20240131 154500", "20240131T154500.", "20240131T154500.12a", " 20240131T154500", "not-a-date",
    ]) {
      assert.equal(parseOrthancTime(value), null, String(value));
    }
  });

  test("dates are shown in the browser's time zone, padded", () => {
    const date = new Date(2024, 0, 5, 7, 8, 9);
    assert.equal(formatDate(date), "2024-01-05 07:08:09");
    assert.equal(formatClock(date), "07:08");
    assert.equal(formatClock(new Date(2024, 11, 31, 23, 59, 59, 999)), "23:59");
  });

  test("no date shows nothing", () => {
    assert.equal(formatDate(null), "");
    assert.equal(formatDate(undefined), "");
  });

  test("a UTC time shown in the browser's time zone, across a day and a year", (context) => {
    const zone = process.env.TZ;
    context.after(() => {
      if (zone === undefined) delete process.env.TZ;
      else process.env.TZ = zone;
    });
    process.env.TZ = "Asia/Kolkata"; // UTC+05:30 all year
    assert.equal(formatDate(parseOrthancTime("20240131T154500.999")), "2024-01-31 21:15:00");
    assert.equal(formatDate(parseOrthancTime("20241231T200000")), "2025-01-01 01:30:00");
    process.env.TZ = "America/New_York"; // UTC-05:00 in winter
    assert.equal(formatDate(parseOrthancTime("20240101T030000")), "2023-12-31 22:00:00");
    assert.equal(formatClock(parseOrthancTime("20240101T030000")), "22:00");
  });
});

describe("time fields", () => {
  test("a field's local time is sent as UTC to the minute, and shown back in local time", (context) => {
    const zone = process.env.TZ;
    context.after(() => {
      if (zone === undefined) delete process.env.TZ;
      else process.env.TZ = zone;
    });
    process.env.TZ = "Europe/Brussels"; // UTC+01:00 in winter, +02:00 in summer
    assert.equal(utcOfLocalInput("2025-01-31T15:45"), "2025-01-31T14:45Z");
    assert.equal(utcOfLocalInput("2025-07-01T00:30"), "2025-06-30T22:30Z");
    assert.equal(localInputOfUtc("2025-01-31T14:45Z"), "2025-01-31T15:45");
    assert.equal(localInputOfUtc("2025-06-30T22:30Z"), "2025-07-01T00:30");
    for (const wrong of ["", "2025-01-31", "2025-01-31 15:45", "tomorrow", null]) {
      assert.equal(utcOfLocalInput(wrong), "", String(wrong));
      assert.equal(localInputOfUtc(wrong), "", String(wrong));
    }
  });

  test("the service's times are Orthanc's or ISO 8601", () => {
    assert.equal(parseAnyTime("20250131T144500").toISOString(), "2025-01-31T14:45:00.000Z");
    assert.equal(parseAnyTime("2025-01-31T14:45:00+00:00").toISOString(), "2025-01-31T14:45:00.000Z");
    for (const wrong of ["", null, "yesterday", "2025-01-31Tnoon"]) assert.equal(parseAnyTime(wrong), null);
  });

  test("a time of today is shown by its clock, another day's with its date", () => {
    const now = new Date(2025, 0, 31, 18, 0);
    assert.equal(formatWhen(new Date(2025, 0, 31, 16, 45), now), "16:45");
    assert.equal(formatWhen(new Date(2025, 0, 30, 16, 45), now), "2025-01-30 16:45");
  });

  test("resource ids are Orthanc's", () => {
    assert.equal(isResourceId(RESOURCE), true);
    for (const wrong of [ID, "", RESOURCE.slice(1), `${RESOURCE}-`, null]) assert.equal(isResourceId(wrong), false);
  });
});

describe("stuck jobs", () => {
  const stuck = (fields = {}) => job({ Server: { Name: "orthanc-1", Stuck: true, StuckSince: "20250131T154500" }, ...fields });

  test("a running job the service flags stuck, since when", () => {
    const now = parseOrthancTime("20250131T170000");
    assert.equal(isStuck(stuck()), true);
    assert.equal(stuckLabel(stuck(), now), `stuck since ${formatWhen(parseOrthancTime("20250131T154500"), now)}`);
    assert.equal(stuckLabel(stuck({ Server: { Stuck: true, StuckSince: null } })), "stuck");
  });

  test("no badge for a job not flagged, or no longer running", () => {
    assert.equal(stuckLabel(job()), "");
    assert.equal(stuckLabel(job({ Server: { Stuck: false, StuckSince: null } })), "");
    assert.equal(stuckLabel(stuck({ State: "Failure" })), "");
    assert.equal(isStuck(null), false);
  });
});

describe("durations", () => {
  test("as a person reads them", () => {
    const cases = {
      0: "0 s", 0.004: "< 0.1 s", 0.43: "0.4 s", 9.96: "10 s", 12: "12 s", 60: "1 min", 252: "4 min 12 s", 3599.6: "1 h",
      7200: "2 h", 7500: "2 h 5 min", 90061: "1 d 1 h",
    };
    for (const [seconds, text] of Object.entries(cases)) assert.equal(formatDuration(Number(seconds)), text, seconds);
  });

  test("no duration is a dash", () => {
    for (const value of [null, undefined, NaN, -1, "abc"]) assert.equal(formatDuration(value), "—", String(value));
  });
});

describe("actions on many jobs", () => {
  const selection = (ids, all = false) => ({ ids: new Set(ids), all });
  const OTHER = "1dc42374-3171-42f0-88f3-0bb3170f77ad";

  test("every action of one job, and delete", () => {
    assert.deepEqual([...BULK_ACTIONS], [...ACTIONS, "delete"]);
  });

  test("the jobs selected are sent by id", () => {
    assert.deepEqual(actionFilter(view({ status: "Failure" }), selection([ID, OTHER])), { ids: [ID, OTHER] });
  });

  test("all matching: the view's filters, by the listing's names", () => {
    const filters = view({ status: "Failure", type: "DicomModalityStore", q: "knee", createdSince: "2025-01-31T14:45Z" });
    assert.deepEqual(actionFilter(filters, selection([], true)), {
      status: ["Failure"], type: "DicomModalityStore", q: "knee", "created-since": "2025-01-31T14:45Z",
    });
  });

  test("all matching without any filter: every state, since the API wants one filter at least", () => {
    assert.deepEqual(actionFilter(defaultView(), selection([], true)), { status: [...STATES] });
  });

  test("the action bar says what is selected", () => {
    assert.equal(selectionText(selection([]), 40), "");
    assert.equal(selectionText(selection([ID]), 40), "1 job selected");
    assert.equal(selectionText(selection([ID, OTHER]), 40), "2 jobs selected");
    assert.equal(selectionText(selection([ID], true), 300), "All 300 jobs matching the filters selected");
  });

  test("the confirmation counts the jobs and the refusals by reason", () => {
    const reason = "the job is Success: Orthanc can resubmit only a job that is Failure";
    assert.equal(confirmationText({ Action: "resubmit", Matching: 300, Accepted: 300, Refused: 0, RefusedReasons: [] }),
      "Resubmit 300 jobs?");
    assert.equal(confirmationText({
      Action: "resubmit", Matching: 302, Accepted: 300, Refused: 2, RefusedReasons: [{ Reason: reason, Count: 2 }],
    }), `Resubmit 300 jobs? 2 refused: ${reason}.`);
    assert.equal(confirmationText({
      Action: "cancel", Matching: 4, Accepted: 1, Refused: 3,
      RefusedReasons: [{ Reason: "a", Count: 2 }, { Reason: "b", Count: 1 }],
    }), "Cancel 1 job? 3 refused: a (2); b (1).");
  });

  test("nothing to do: said so, with why", () => {
    assert.equal(confirmationText({ Action: "pause", Matching: 0, Accepted: 0, Refused: 0, RefusedReasons: [] }),
      "Nothing to pause: no job matches.");
    assert.equal(confirmationText({
      Action: "resume", Matching: 2, Accepted: 0, Refused: 2, RefusedReasons: [{ Reason: "the job is Running", Count: 2 }],
    }), "Nothing to resume: all 2 jobs refused: the job is Running.");
  });

  test("a run's progress, and its end", () => {
    const progress = { State: "Running", Total: 300, Processed: 120, Done: 118, Refused: 2, Unreachable: 0 };
    assert.equal(actionProgressText(progress), "120 of 300 jobs · 118 done · 2 refused · 0 owner unreachable");
    assert.equal(actionProgressText({ ...progress, State: "Done", Processed: 300, Done: 298 }),
      "Finished: 300 of 300 jobs · 298 done · 2 refused · 0 owner unreachable");
    assert.equal(actionProgressText({ ...progress, State: "Cancelled" }).split(":")[0], "Stopped");
  });

  test("progress never goes backwards, and the end is shown once", () => {
    const running = (processed) => ({ State: "Running", Processed: processed });
    assert.equal(isNewerProgress(null, running(0)), true);
    assert.equal(isNewerProgress(running(5), running(7)), true);
    assert.equal(isNewerProgress(running(7), running(5)), false);
    assert.equal(isNewerProgress(running(7), { State: "Done", Processed: 9 }), true);
    assert.equal(isNewerProgress({ State: "Done", Processed: 9 }, { State: "Done", Processed: 9 }), false);
  });

  test("results not done come first", () => {
    const results = [{ Result: "done" }, { Result: "refused" }, { Result: "unreachable" }, { Result: "done" }];
    assert.deepEqual(sortedResults(results).map((result) => result.Result), ["unreachable", "refused", "done", "done"]);
    assert.deepEqual(sortedResults(undefined), []);
  });
});

describe("jobs per period", () => {
  const stats = {
    Types: ["Archive", "DicomModalityStore"],
    Periods: [
      { Time: "2025-01-31T14:00:00+00:00", States: { Success: { Archive: 3, DicomModalityStore: 1 }, Failure: { DicomModalityStore: 2 } } },
      { Time: "2025-01-31T15:00:00+00:00", States: {} },
      { Time: "2025-01-31T16:00:00+00:00", States: { Running: { Archive: 1 } } },
    ],
  };

  test("every type: the states stacked in their order, the highest bar", () => {
    const { bars, max } = stackPeriods(stats);
    assert.equal(max, 6);
    assert.deepEqual(bars.map((bar) => bar.total), [6, 0, 1]);
    assert.deepEqual(Object.keys(bars[0].counts), [...STATES]);
    assert.equal(bars[0].counts.Failure, 2);
    assert.equal(bars[0].time, Date.UTC(2025, 0, 31, 14));
    assert.deepEqual(stateTotals(bars), { Pending: 0, Running: 1, Paused: 0, Retry: 0, Success: 4, Failure: 2 });
  });

  test("one type", () => {
    const { bars, max } = stackPeriods(stats, "DicomModalityStore");
    assert.equal(max, 3);
    assert.deepEqual(bars.map((bar) => bar.total), [3, 0, 0]);
  });

  test("no answer yet: no bar", () => {
    assert.deepEqual(stackPeriods(null), { bars: [], max: 0 });
  });

  test("the periods offered", () => {
    assert.deepEqual({ ...PERIODS.day }, { window: 86400, bucket: 3600, label: "last 24 hours, by hour" });
    assert.equal(PERIODS.week.window / PERIODS.week.bucket, 7);
  });
});

describe("webhooks", () => {
  test("failing when alerts were given up, or the last attempt failed after the last delivery", () => {
    assert.equal(webhookFailing({ Failed: 0, LastFailureAt: null }), false);
    assert.equal(webhookFailing({ Failed: 2, LastFailureAt: null }), true);
    assert.equal(webhookFailing({ Failed: 0, LastFailureAt: "20250131T100000" }), true);
    assert.equal(webhookFailing({ Failed: 0, LastFailureAt: "20250131T100000", LastDeliveredAt: "20250131T100001" }), false);
    assert.equal(webhookFailing({ Failed: 0, LastFailureAt: "20250131T100002", LastDeliveredAt: "20250131T100001" }), true);
  });
});
