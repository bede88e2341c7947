// The chart: jobs completed and failed over time, one lane per server (inline SVG).

import { readStats } from "./api.js";
import { dashboard, runOnce } from "./dashboard.js";
import { $, element, setProblem, svg } from "./dom.js";
import { formatClock } from "./state.js";

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
