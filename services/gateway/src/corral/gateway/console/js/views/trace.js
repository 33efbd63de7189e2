// The trace of a turn as a waterfall, from the session's own events: the turn, each time it ran,
// each model request (span.model_request_start/end), each tool call (and the wait for its
// confirmation), errors. The trace ids the span events carry link out to Jaeger when the gateway
// is configured with its URL (CORRAL_GATEWAY_JAEGER_URL).

import { all, api, config } from "../api.js";
import { h, replace } from "../dom.js";
import * as fmt from "../format.js";

const TOOL_USES = new Set(["agent.tool_use", "agent.mcp_tool_use", "agent.custom_tool_use"]);
const RESULT_OF = {
  "agent.tool_result": "tool_use_id",
  "agent.mcp_tool_result": "mcp_tool_use_id",
  "user.custom_tool_result": "custom_tool_use_id",
};

const ms = (event) => Date.parse(event.processed_at);

/** The turns of a session: each user.message and what followed it until the next one. */
export function turnsOf(events) {
  const turns = [];
  for (const event of events) {
    if (!event.processed_at) continue;
    if (event.type === "user.message" || !turns.length) turns.push([]);
    turns[turns.length - 1].push(event);
  }
  return turns;
}

/** Rows {label, kind, start, end, detail} (times in ms) and the trace ids of one turn. */
export function spansOf(turn) {
  const rows = [];
  const traceIds = new Set();
  const starts = new Map();
  const tools = new Map();
  let running = null;
  const first = ms(turn[0]);
  let last = first;
  let requests = 0;
  for (const e of turn) {
    const at = ms(e);
    last = Math.max(last, at);
    if (e.trace_id) traceIds.add(e.trace_id);
    if (e.type === "session.status_running") running = at;
    else if (e.type === "session.status_idle" && running != null) {
      rows.push({ label: "running", kind: "run", start: running, end: at, detail: e.stop_reason?.type ?? "" });
      running = null;
    } else if (e.type === "span.model_request_start") starts.set(e.id, at);
    else if (e.type === "span.model_request_end") {
      const start = starts.get(e.model_request_start_id) ?? at;
      const u = e.model_usage ?? {};
      rows.push({
        label: `model request ${++requests}`,
        kind: e.is_error ? "model error" : "model",
        start,
        end: at,
        detail: `${fmt.tokens(u.input_tokens)} in · ${fmt.tokens(u.output_tokens)} out${e.is_error ? " · failed" : ""}`,
      });
    } else if (TOOL_USES.has(e.type)) {
      tools.set(e.id, { name: e.name, start: at, asked: e.evaluated_permission === "ask", confirmedAt: null });
    } else if (e.type === "user.tool_confirmation" && tools.has(e.tool_use_id)) {
      const tool = tools.get(e.tool_use_id);
      tool.confirmedAt = at;
      rows.push({ label: `${tool.name}: confirmation`, kind: "wait", start: tool.start, end: at, detail: e.result });
    } else if (e.type in RESULT_OF && tools.has(e[RESULT_OF[e.type]])) {
      const tool = tools.get(e[RESULT_OF[e.type]]);
      rows.push({ label: `tool ${tool.name}`, kind: e.is_error ? "tool error" : "tool", start: tool.confirmedAt ?? tool.start, end: at, detail: e.is_error ? "error" : "ok" });
    } else if (e.type === "session.error") {
      rows.push({ label: e.error?.type ?? "error", kind: "error", start: at, end: at, detail: e.error?.message ?? "" });
    }
  }
  if (running != null) rows.push({ label: "running", kind: "run", start: running, end: last, detail: "still running" });
  rows.sort((a, b) => a.start - b.start || b.end - a.end);
  rows.unshift({ label: "turn", kind: "turn", start: first, end: last, detail: "" });
  return { rows, traceIds: [...traceIds], start: first, end: last };
}

function waterfall({ rows, start, end }) {
  const total = Math.max(end - start, 1);
  return h(
    "div",
    { class: "waterfall", "data-testid": "waterfall" },
    rows.map((row) =>
      h(
        "div",
        { class: `span-row k-${row.kind.replace(" ", "-")}` },
        h("div", { class: "span-label" }, row.label),
        h(
          "div",
          { class: "span-track" },
          h("div", {
            class: "span-bar",
            title: row.detail,
            style: { left: `${((row.start - start) / total) * 100}%`, width: `max(2px, ${((row.end - row.start) / total) * 100}%)` },
          }),
        ),
        h("div", { class: "span-time" }, fmt.duration((row.end - row.start) / 1000), h("span", { class: "muted" }, ` ${row.detail}`)),
      ),
    ),
  );
}

export async function traceView(main, [id, chosen], signal) {
  const [session, events, { jaeger_url: jaeger }] = await Promise.all([
    api(`/v1/sessions/${id}`, { signal }),
    all(`/v1/sessions/${id}/events`, { limit: 1000 }, { signal }),
    config(),
  ]);
  const turns = turnsOf(events);
  const head = [h("div", { class: "crumbs" }, h("a", { href: "#/sessions" }, "Sessions"), " / ", h("a", { href: `#/sessions/${id}` }, session.title || id), " / trace")];
  if (!turns.length) return replace(main, ...head, h("p", { class: "muted empty" }, "No turns yet."));
  const index = Math.min(chosen ? Number(chosen) : turns.length, turns.length);
  const trace = spansOf(turns[index - 1]);
  const picker = h(
    "nav",
    { class: "turns" },
    "Turn ",
    turns.map((_, i) => (i + 1 === index ? h("strong", {}, String(i + 1)) : h("a", { href: `#/sessions/${id}/trace/${i + 1}` }, String(i + 1)))),
  );
  const ids = trace.traceIds.length
    ? h(
        "p",
        { class: "trace-ids" },
        "Trace ",
        trace.traceIds.map((t) => (jaeger ? h("a", { href: `${jaeger.replace(/\/$/, "")}/trace/${t}`, target: "_blank", rel: "noopener noreferrer" }, t) : h("code", {}, t))),
        jaeger ? " (opens Jaeger)" : "",
      )
    : h("p", { class: "muted" }, "These events carry no trace id.");
  replace(main, ...head, h("h1", {}, `Turn ${index} of ${turns.length}`), picker, ids, waterfall(trace));
}
