// Alerts by webhook: each webhook the operator configured, the alerts it receives, and how their deliveries
// went (delivered, given up, still waiting, the last failed attempt). Hidden when there is none.

import { readWebhooks } from "./api.js";
import { dashboard } from "./dashboard.js";
import { $, element, setProblem, timeElement } from "./dom.js";

export async function loadWebhooks() {
  try {
    dashboard.webhooks = await readWebhooks();
    setProblem("webhooks", null);
  } catch (error) {
    setProblem("webhooks", `Webhooks could not be read: ${error.message}`);
  }
  renderWebhooks();
}

/** Which alerts a webhook receives: its events, and the types and servers it is limited to. */
function describeFilter(webhook) {
  const parts = [webhook.Events.join(", ")];
  if (webhook.Types) parts.push(`types: ${webhook.Types.join(", ")}`);
  if (webhook.Servers) parts.push(`servers: ${webhook.Servers.join(", ")}`);
  return parts.join(" · ");
}

function renderWebhooks() {
  const hooks = Array.isArray(dashboard.webhooks) ? dashboard.webhooks : [];
  $("#webhooks-panel").hidden = !hooks.length;
  const body = $("#webhooks-body");
  body.replaceChildren();
  for (const hook of hooks) {
    // Failing: alerts were given up, or the last attempt failed after the last delivery.
    const failing = hook.Failed > 0 || Boolean(hook.LastFailureAt && (!hook.LastDeliveredAt ||
      hook.LastFailureAt > hook.LastDeliveredAt));
    const lastFailure = hook.LastFailureAt
      ? element("div", {}, timeElement(hook.LastFailureAt),
        element("div", { class: "last-error", text: hook.LastError || "" }))
      : element("span", { class: "muted", text: "—" });
    body.append(element("tr", { class: failing ? "failing" : null, dataset: { webhook: hook.Name } },
      element("th", { scope: "row" }, hook.Name, element("div", { class: "url", text: hook.Url })),
      element("td", { text: describeFilter(hook) }),
      element("td", { class: "num", text: String(hook.Delivered) }),
      element("td", { class: "num failed-count", text: String(hook.Failed) }),
      element("td", { class: "num", text: String(hook.Queued) }),
      element("td", {}, lastFailure)));
  }
}
