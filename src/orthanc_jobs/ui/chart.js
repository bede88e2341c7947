// The charts, inline SVG drawn here (no library): jobs completed and failed over time, one lane per
// server; jobs created per period stacked by state, and the waiting and running times per type.

import { readDurations, readJobsPerPeriod, readStats } from "./api.js";
import { dashboard, runOnce } from "./dashboard.js";
import { $, element, setProblem, svg } from "./dom.js";
import { PERIODS, STATES, formatClock, formatDate, formatDuration, stackPeriods, stateTotals } from "./state.js";

// A job ended: the chart is read again this much later (one read for the jobs that end meanwhile).
const STATS_DELAY_MS = 3000;

/** The period the chart covers and the width of its bars, in seconds, as the select offers them. */
function chartPeriod() {
  const [seconds, bucket] = $("#chart-window").value.split(":").map(Number);
  return { seconds, bucket };
}

export async function loadStats() {
  const { seconds, bucket } = chartPeriod();
  try {
    dashboard.stats = await readStats(bucket, seconds);
    setProblem("stats", null);
    renderChart();
  } catch (error) {
    $("#chart").replaceChildren(element("p", { class: "muted", text: `The statistics could not be read: ${error.message}` }));
  }
}

/** A job ended: its server's lane changed. */
export function scheduleStats() {
  runOnce("stats", STATS_DELAY_MS, loadStats);
}

/** Draws the last statistics read, as wide as the chart's box. */
export function renderChart() {
  const container = $("#chart");
  const { stats } = dashboard;
  if (!stats || !stats.Servers) return;
  const names = Object.keys(stats.Servers).sort();
  if (!names.length) {
    container.replaceChildren(element("p", { class: "muted", text: "No server yet." }));
    return;
  }
  const bucket = Number(stats.Bucket) || 60;
  const period = chartPeriod();
  const width = Math.max(320, Math.floor(container.clientWidth || 480));
  const labelWidth = 110;
  const lane = 38;
  const axis = 20;
  const plotWidth = width - labelWidth - 8;
  const height = names.length * lane + axis;
  // One time line for all servers: from the earliest bucket to the latest.
  let start = Infinity;
  let end = -Infinity;
  for (const name of names) {
    for (const point of stats.Servers[name]) {
      const time = Date.parse(point.Time);
      if (Number.isFinite(time)) {
        start = Math.min(start, time);
        end = Math.max(end, time);
      }
    }
  }
  if (!Number.isFinite(start)) {
    end = Math.floor(Date.now() / (bucket * 1000)) * bucket * 1000;
    start = end - period.seconds * 1000;
  }
  const buckets = Math.max(1, Math.round((end - start) / (bucket * 1000)) + 1);
  const step = plotWidth / buckets;
  let max = 1;
  const sums = {};
  for (const name of names) {
    sums[name] = { Success: 0, Failure: 0 };
    for (const point of stats.Servers[name]) {
      max = Math.max(max, (point.Success || 0) + (point.Failure || 0));
      sums[name].Success += point.Success || 0;
      sums[name].Failure += point.Failure || 0;
    }
  }
  const periodText = $("#chart-window").selectedOptions[0].textContent;
  const summary = names.map((name) => `${name}: ${sums[name].Success} completed, ${sums[name].Failure} failed`).join("; ");
  const root = svg("svg", {
    viewBox: `0 0 ${width} ${height}`, width, height, role: "img", class: "chart-svg",
    "aria-label": `Jobs completed and failed per server, ${periodText}. ${summary}.`,
  });
  const barHeight = lane - 12;
  names.forEach((name, index) => {
    const top = index * lane;
    const base = top + lane - 4;
    const label = svg("g", { class: "lane-label" });
    label.append(svg("text", { x: 0, y: top + 15, class: "lane-name" }, name));
    label.append(svg("text", { x: 0, y: top + 29, class: "lane-sum" }, `${sums[name].Success} ok · ${sums[name].Failure} failed`));
    root.append(label);
    root.append(svg("line", { x1: labelWidth, x2: labelWidth + plotWidth, y1: base + 0.5, y2: base + 0.5, class: "baseline" }));
    for (const point of stats.Servers[name]) {
      const success = point.Success || 0;
      const failure = point.Failure || 0;
      if (!success && !failure) continue;
      const time = Date.parse(point.Time);
      const slot = Math.round((time - start) / (bucket * 1000));
      const x = labelWidth + slot * step + Math.min(1, step * 0.1);
      const w = Math.max(1, step - Math.min(2, step * 0.2));
      const group = svg("g");
      const from = new Date(time);
      const to = new Date(time + bucket * 1000);
      group.append(svg("title", {}, `${name}, ${formatClock(from)}–${formatClock(to)}: ${success} completed, ${failure} failed`));
      const successHeight = (success / max) * barHeight;
      const failureHeight = (failure / max) * barHeight;
      if (success) group.append(svg("rect", { x, y: base - successHeight, width: w, height: successHeight, class: "bar-success" }));
      if (failure) {
        group.append(svg("rect", { x, y: base - successHeight - failureHeight, width: w, height: failureHeight, class: "bar-failure" }));
      }
      root.append(group);
    }
  });
  // Time axis: start, middle, end, and the scale.
  const axisY = names.length * lane + 14;
  const ticks = [[start, "start"], [start + (end - start) / 2, "middle"], [end + bucket * 1000, "end"]];
  for (const [time, anchor] of ticks) {
    const x = labelWidth + ((time - start) / (bucket * 1000)) * step;
    root.append(svg("text", { x: Math.min(x, width - 2), y: axisY, class: "tick", "text-anchor": anchor }, formatClock(new Date(time))));
  }
  root.append(svg("text", { x: 0, y: axisY, class: "tick" }, `scale: ${max} / ${bucket >= 60 ? `${bucket / 60} min` : `${bucket} s`}`));
  container.replaceChildren(root);
}

// ---------------------------------------------------------------------------------------------------
// Where time goes: jobs created per period, stacked by their state now, and waiting and running time
// percentiles per type.

/** The colours of the states' bars (the badges' colours, stronger). */
const STATE_COLOURS = Object.freeze({
  Pending: "#7b8794", Running: "#1f5fbf", Paused: "#c08a00", Retry: "#8a5cc2", Success: "#3b9a5c", Failure: "#d64545",
});

const timePeriod = () => PERIODS[$("#time-period").value] || PERIODS.day;

/** Reads both answers for the period chosen, then draws them. */
export async function loadTimeStats() {
  const { window: seconds, bucket } = timePeriod();
  try {
    const [perPeriod, durations] = await Promise.all([readJobsPerPeriod(bucket, seconds), readDurations(seconds)]);
    dashboard.timeStats = perPeriod;
    dashboard.durations = durations;
    setProblem("time-stats", null);
  } catch (error) {
    setProblem("time-stats", `The time statistics could not be read: ${error.message}`);
    return;
  }
  renderTypeOptions();
  renderTimeChart();
  renderDurations();
}

/** A job ended or started: the bars and the percentiles changed (one read for the changes meanwhile). */
export function scheduleTimeStats() {
  runOnce("time-stats", STATS_DELAY_MS, loadTimeStats);
}

/** The type selector offers the types of the period's jobs, and keeps the one chosen. */
function renderTypeOptions() {
  const select = $("#time-type");
  const types = new Set([...(dashboard.timeStats.Types || []), ...Object.keys(dashboard.durations.Types || {})]);
  if (select.value) types.add(select.value);
  const sorted = [...types].sort();
  const current = [...select.options].slice(1).map((option) => option.value);
  if (current.join("\n") === sorted.join("\n")) return;
  const chosen = select.value;
  select.replaceChildren(element("option", { value: "", text: "All types" }),
    ...sorted.map((type) => element("option", { value: type, text: type })));
  select.value = chosen;
}

/** A period's start as its axis labels it: the hour, or the day. */
function periodLabel(time, bucket) {
  const date = new Date(time);
  if (bucket < 86400) return formatClock(date);
  return date.toLocaleDateString(undefined, { weekday: "short", day: "numeric" });
}

export function renderTimeChart() {
  const container = $("#time-chart");
  const stats = dashboard.timeStats;
  if (!stats) return;
  const type = $("#time-type").value;
  const { bars, max } = stackPeriods(stats, type);
  const bucket = Number(stats.Bucket) || 3600;
  const totals = stateTotals(bars);
  $("#time-legend").replaceChildren(...STATES.flatMap((state) => [
    element("span", { class: `swatch swatch-${state.toLowerCase()}`, "aria-hidden": "true" }),
    element("span", { class: "legend-item", text: `${state} ${totals[state]}` }),
  ]));
  if (!bars.length) {
    container.replaceChildren(element("p", { class: "muted", text: "No period yet." }));
    return;
  }
  const width = Math.max(320, Math.floor(container.clientWidth || 640));
  const height = 190;
  const left = 34;
  const bottom = 20;
  const plotWidth = width - left - 4;
  const plotHeight = height - bottom - 8;
  const step = plotWidth / bars.length;
  const scale = Math.max(1, max);
  const what = type ? `${type} jobs` : "Jobs";
  const sums = STATES.filter((state) => totals[state]).map((state) => `${totals[state]} ${state}`).join(", ");
  const root = svg("svg", {
    viewBox: `0 0 ${width} ${height}`, width, height, role: "img", class: "chart-svg time-svg",
    "aria-label": `${what} created per ${bucket < 86400 ? "hour" : "day"} over the ${timePeriod().label.split(",")[0]}, ` +
      `by their state now: ${sums || "none"}.`,
  });
  // The scale: zero, the highest bar, and half of it when that is a whole number of jobs.
  for (const fraction of scale % 2 ? [0, 1] : [0, 0.5, 1]) {
    const y = 8 + plotHeight * (1 - fraction);
    root.append(svg("line", { x1: left, x2: width - 4, y1: y + 0.5, y2: y + 0.5, class: fraction ? "grid" : "baseline" }));
    root.append(svg("text", { x: left - 4, y: y + 4, class: "tick", "text-anchor": "end" }, String(scale * fraction)));
  }
  const labelEvery = Math.max(1, Math.ceil(bars.length / Math.max(1, Math.floor(plotWidth / 46))));
  bars.forEach((bar, index) => {
    const x = left + index * step + Math.min(2, step * 0.15);
    const barWidth = Math.max(1, step - Math.min(4, step * 0.3));
    const group = svg("g", { class: "period", "data-total": bar.total });
    const start = new Date(bar.time);
    const end = new Date(bar.time + bucket * 1000);
    const detail = STATES.filter((state) => bar.counts[state]).map((state) => `${bar.counts[state]} ${state}`).join(", ");
    const span = bucket < 86400 ? `${formatDate(start).slice(0, 16)}–${formatClock(end)}` : formatDate(start).slice(0, 10);
    group.append(svg("title", {}, `${span}: ${bar.total} ${type || "jobs"}${detail ? ` (${detail})` : ""}`));
    let top = 8 + plotHeight;
    for (const state of STATES) {
      const count = bar.counts[state];
      if (!count) continue;
      const h = (count / scale) * plotHeight;
      top -= h;
      group.append(svg("rect", { x, y: top, width: barWidth, height: h, fill: STATE_COLOURS[state], "data-state": state }));
    }
    root.append(group);
    if (index % labelEvery === 0) {
      root.append(svg("text", { x: x + barWidth / 2, y: height - 5, class: "tick", "text-anchor": "middle" },
        periodLabel(bar.time, bucket)));
    }
  });
  container.replaceChildren(root);
}

// The percentiles of each part of a job's time, as /orthanc-jobs/stats/durations names them.
const PARTS = Object.freeze(["Wait", "Run"]);
const PERCENTILES = Object.freeze({ P50: "p50", P90: "p90", P99: "p99", Max: "max" });

function renderDurations() {
  const columns = $("#durations-columns");
  if (!columns.cells.length) {
    columns.append(...PARTS.flatMap(() => Object.values(PERCENTILES).map((name) =>
      element("th", { scope: "col", class: "num", text: name }))));
  }
  const body = $("#durations-body");
  const types = Object.entries((dashboard.durations && dashboard.durations.Types) || {});
  if (!types.length) {
    body.replaceChildren(element("tr", { class: "placeholder" },
      element("td", { colspan: 10, text: `No job ended in the ${timePeriod().label.split(",")[0]}.` })));
    return;
  }
  const cell = (seconds) => element("td", { class: "num", text: formatDuration(seconds), title: `${seconds} s` });
  body.replaceChildren(...types.map(([type, entry]) => element("tr", { dataset: { type } },
    element("th", { scope: "row", text: type }),
    element("td", { class: "num", text: String(entry.Count) }),
    ...PARTS.flatMap((part) => Object.keys(PERCENTILES).map((key) => cell(entry[part][key]))))));
}
