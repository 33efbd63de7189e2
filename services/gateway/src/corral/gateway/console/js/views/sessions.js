// The sessions list: filter by status, agent and creation time; usage, active time, estimated cost.

import { all, api, config } from "../api.js";
import { estimatedCost } from "../cost.js";
import { h, replace, table } from "../dom.js";
import * as fmt from "../format.js";

const STATUSES = ["", "running", "idle", "rescheduling", "terminated"];

function filtersOf(queryString) {
  const params = new URLSearchParams(queryString ?? "");
  return {
    status: params.get("status") ?? "",
    agent: params.get("agent") ?? "",
    after: params.get("after") ?? "",
    before: params.get("before") ?? "",
    page: params.get("page") ?? "",
  };
}

function hashOf(filters) {
  const params = new URLSearchParams(Object.entries(filters).filter(([, v]) => v));
  const text = params.toString();
  return text ? `#/sessions?${text}` : "#/sessions";
}

/** A datetime-local value (local time) as RFC 3339 UTC. */
function utc(local) {
  return local ? new Date(local).toISOString() : undefined;
}

export async function sessionsView(main, [queryString], signal) {
  const filters = filtersOf(queryString);
  const [agents, { prices }] = await Promise.all([all("/v1/agents", { limit: 100 }, { signal }), config()]);
  const answer = await api("/v1/sessions", {
    signal,
    query: {
      limit: 25,
      page: filters.page,
      statuses: filters.status ? [filters.status] : undefined,
      agent_id: filters.agent,
      "created_at[gte]": utc(filters.after),
      "created_at[lte]": utc(filters.before),
    },
  });

  const select = (name, options, chosen) =>
    h("select", { name }, options.map(([value, label]) => h("option", { value, selected: value === chosen }, label)));
  const form = h(
    "form",
    {
      class: "filters",
      onsubmit: (event) => {
        event.preventDefault();
        const data = new FormData(event.target);
        location.hash = hashOf({
          status: data.get("status"),
          agent: data.get("agent"),
          after: data.get("after"),
          before: data.get("before"),
        });
      },
    },
    h("label", {}, "Status ", select("status", STATUSES.map((s) => [s, s || "any"]), filters.status)),
    h(
      "label",
      {},
      "Agent ",
      select("agent", [["", "any"], ...agents.map((a) => [a.id, `${a.name} (${a.id.slice(-6)})`])], filters.agent),
    ),
    h("label", {}, "Created after ", h("input", { type: "datetime-local", name: "after", value: filters.after })),
    h("label", {}, "before ", h("input", { type: "datetime-local", name: "before", value: filters.before })),
    h("button", { type: "submit" }, "Filter"),
  );

  const rows = table(
    [
      { label: "Session", cell: (s) => h("a", { href: `#/sessions/${s.id}` }, s.title || s.id) },
      { label: "Status", cell: (s) => h("span", { class: `status ${s.status}` }, s.status) },
      { label: "Agent", cell: (s) => fmt.agentLabel(s.agent) },
      { label: "Created", cell: (s) => fmt.time(s.created_at) },
      { label: "Tokens in / out", cell: (s) => `${fmt.tokens(s.usage?.input_tokens)} / ${fmt.tokens(s.usage?.output_tokens)}` },
      { label: "Active", cell: (s) => fmt.duration(s.stats?.active_seconds ?? s.usage?.active_seconds) },
      { label: "Est. cost", cell: (s) => fmt.usd(estimatedCost(s, prices)) },
    ],
    answer.data,
    "No sessions match.",
  );
  const pager = h(
    "div",
    { class: "pager" },
    answer.prev_page && h("a", { href: hashOf({ ...filters, page: answer.prev_page }) }, "← Newer"),
    answer.next_page && h("a", { href: hashOf({ ...filters, page: answer.next_page }) }, "Older →"),
  );
  replace(main, h("h1", {}, "Sessions"), form, h("div", { id: "sessions", class: "scroll" }, rows), pager);
}
