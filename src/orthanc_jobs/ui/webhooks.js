// The webhooks' deliveries: each webhook, what it was sent, what failed and why (GET /orthanc-jobs/webhooks).
// The panel stays hidden where the job-service has no webhooks route, or no webhook.

import { readWebhooks } from "./api.js";
import { dashboard } from "./dashboard.js";
import { $, element, setProblem } from "./dom.js";
import { formatDate, parseAnyTime, webhookFailing } from "./state.js";

const list = (values) => (Array.isArray(values) && values.length ? values.join(", ") : "");

function timeCell(value) {
  const date = parseAnyTime(value);
  return element("td", {}, date
    ? element("time", { datetime: date.toISOString(), title: `${date.toISOString()} (UTC)`, text: formatDate(date) })
    : element("span", { class: "muted", text: "—" }));
}

export async function loadWebhooks() {
  if (!dashboard.features.webhooks) return;
  let hooks;
  try {
    hooks = await readWebhooks();
    setProblem("webhooks", null);
  } catch (error) {
    setProblem("webhooks", `The webhooks could not be read: ${error.message}`);
    return;
  }
  const panel = $("#webhooks-panel");
  panel.hidden = !Array.isArray(hooks) || hooks.length === 0;
  if (panel.hidden) return;
  $("#webhooks-body").replaceChildren(...hooks.map((hook) => {
    const failing = webhookFailing(hook);
    const filters = [list(hook.Types) && `types: ${list(hook.Types)}`, list(hook.Servers) && `servers: ${list(hook.Servers)}`]
      .filter(Boolean).join(" · ");
    const failure = timeCell(hook.LastFailureAt);
    if (hook.LastError) failure.append(element("div", { class: "error-text webhook-error", text: hook.LastError, title: hook.LastError }));
    return element("tr", { class: failing ? "failing" : "", dataset: { webhook: hook.Name } },
      element("th", { scope: "row" }, element("strong", { text: hook.Name }), element("div", { class: "url", text: hook.Url })),
      element("td", {}, list(hook.Events) || "every event", filters ? element("div", { class: "muted", text: filters }) : null),
      element("td", { class: "num", text: String(hook.Delivered ?? 0) }),
      element("td", { class: `num${Number(hook.Failed) > 0 ? " failed" : ""}`, text: String(hook.Failed ?? 0) }),
      element("td", { class: "num", text: String(hook.Queued ?? 0) }),
      timeCell(hook.LastDeliveredAt),
      failure);
  }));
}
