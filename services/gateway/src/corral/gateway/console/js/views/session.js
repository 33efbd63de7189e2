// One session, live: its conversation (thinking, tool calls with their inputs and outputs, errors),
// the confirmation a `requires_action` stop asks for, interrupt, and a message box. The stream is
// opened before the history is read, and events are keyed by id, so nothing falls between the two
// and nothing shows twice; a dropped stream is reopened the same way.

import { all, api, config, openStream, sendEvents } from "../api.js";
import { estimatedCost } from "../cost.js";
import { errorBox, h, json, replace } from "../dom.js";
import * as fmt from "../format.js";
import { frames } from "../sse.js";

const TOOL_USES = new Set(["agent.tool_use", "agent.mcp_tool_use", "agent.custom_tool_use"]);
const RESULT_OF = {
  "agent.tool_result": "tool_use_id",
  "agent.mcp_tool_result": "mcp_tool_use_id",
  "user.custom_tool_result": "custom_tool_use_id",
};
const RECONNECT_MS = 1000;

function textOf(content) {
  return (content ?? []).map((block) => (block.type === "text" ? block.text : `[${block.type}]`)).join("\n");
}

function when(signal, ms) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => (clearTimeout(timer), resolve()), { once: true });
  });
}

class Conversation {
  constructor(sessionId, list, onChange) {
    this.sessionId = sessionId;
    this.list = list;
    this.onChange = onChange;
    this.seen = new Set();
    this.previews = new Map(); // event id -> element showing the text as it is written
    this.tools = new Map(); // tool use id -> {card, actions, result}
    this.decided = new Set(); // tool use ids with a confirmation
  }

  add(node) {
    this.list.append(node);
    node.scrollIntoView?.({ block: "nearest" });
  }

  frame({ event, data }) {
    if (event === "ping") return;
    if (event === "event_start") return this.startPreview(data.event);
    if (event === "event_delta") return this.extendPreview(data);
    if (event === "session.deleted") {
      this.deleted = true;
      return this.add(h("div", { class: "notice" }, "This session was deleted."));
    }
    this.event(data);
  }

  startPreview(event) {
    if (!event?.id || this.seen.has(event.id) || this.previews.has(event.id)) return;
    const text = h("div", { class: "text" });
    const node =
      event.type === "agent.thinking"
        ? h("details", { class: "thinking", open: true }, h("summary", {}, "Thinking…"), text)
        : h("div", { class: "msg agent live", dataset: { eventId: event.id } }, h("div", { class: "who" }, "Agent"), text);
    this.previews.set(event.id, { node, text });
    this.add(node);
  }

  extendPreview(data) {
    const preview = this.previews.get(data.event_id);
    const text = data.delta?.content?.text;
    if (preview && text) preview.text.append(text);
  }

  event(e) {
    if (!e?.id || this.seen.has(e.id)) return;
    this.seen.add(e.id);
    const preview = this.previews.get(e.id);
    this.previews.delete(e.id);
    if (TOOL_USES.has(e.type)) return this.toolUse(e);
    if (e.type in RESULT_OF) return this.toolResult(e[RESULT_OF[e.type]], e);
    switch (e.type) {
      case "user.message":
        return this.add(h("div", { class: "msg user" }, h("div", { class: "who" }, "You"), h("div", { class: "text" }, textOf(e.content))));
      case "agent.message": {
        const node = h("div", { class: "msg agent", dataset: { eventId: e.id } }, h("div", { class: "who" }, "Agent"), h("div", { class: "text" }, textOf(e.content)));
        return preview ? preview.node.replaceWith(node) : this.add(node);
      }
      case "agent.thinking":
        if (preview) preview.node.querySelector("summary").textContent = "Thinking";
        else this.add(h("details", { class: "thinking" }, h("summary", {}, "Thinking")));
        return;
      case "user.tool_confirmation":
        return this.confirmed(e);
      case "user.interrupt":
        return this.add(h("div", { class: "notice" }, "Interrupted."));
      case "session.error":
        return this.add(
          h("div", { class: "error", role: "alert" }, h("strong", {}, e.error?.type ?? "error"), `: ${e.error?.message ?? ""}`,
            e.error?.retry_status ? h("span", { class: "muted" }, ` (${e.error.retry_status.type})`) : null),
        );
      case "session.status_idle":
        this.onChange(e);
        if (e.stop_reason?.type === "requires_action") (e.stop_reason.event_ids ?? []).forEach((id) => this.ask(id));
        else this.add(h("div", { class: "turn-end muted" }, `Idle · ${e.stop_reason?.type ?? ""}`));
        return;
      case "session.status_running":
      case "session.status_rescheduled":
      case "session.status_terminated":
      case "session.usage":
      case "session.updated":
        return this.onChange(e);
      case "agent.thread_context_compacted":
        return this.add(h("div", { class: "notice" }, "The context was compacted."));
      default:
        return; // span.* and others: the trace view shows them
    }
  }

  toolUse(e) {
    const name = e.type === "agent.mcp_tool_use" ? `${e.mcp_server_name} · ${e.name}` : e.name;
    const actions = h("div", { class: "actions" });
    const result = h("div", { class: "result muted" }, "Waiting for the result…");
    const card = h(
      "div",
      { class: "tool", dataset: { toolUseId: e.id } },
      h("div", { class: "tool-head" }, h("strong", {}, name), e.evaluated_permission ? h("span", { class: "tag" }, e.evaluated_permission) : null),
      h("details", { open: true }, h("summary", {}, "Input"), json(e.input)),
      actions,
      result,
    );
    this.tools.set(e.id, { card, actions, result });
    this.add(card);
  }

  toolResult(useId, e) {
    const tool = this.tools.get(useId);
    const output = h("div", { class: e.is_error ? "result failed" : "result" }, h("div", { class: "label" }, e.is_error ? "Error" : "Output"), h("pre", {}, textOf(e.content)));
    if (tool) {
      tool.result.replaceWith(output);
      tool.result = output;
      tool.actions.replaceChildren();
    } else this.add(output);
  }

  ask(useId) {
    const tool = this.tools.get(useId);
    if (!tool || this.decided.has(useId)) return;
    const reason = h("input", { type: "text", placeholder: "Reason for a denial (optional)", "aria-label": "Deny message" });
    const problem = h("div");
    const answer = async (result) => {
      const event = { type: "user.tool_confirmation", tool_use_id: useId, result };
      if (result === "deny" && reason.value.trim()) event.deny_message = reason.value.trim();
      tool.actions.querySelectorAll("button").forEach((b) => (b.disabled = true));
      try {
        await sendEvents(this.sessionId, [event]);
      } catch (error) {
        tool.actions.querySelectorAll("button").forEach((b) => (b.disabled = false));
        replace(problem, errorBox(error));
      }
    };
    replace(
      tool.actions,
      h("div", { class: "confirm" },
        h("span", {}, "This call needs your confirmation."),
        h("button", { type: "button", class: "allow", onclick: () => answer("allow") }, "Allow"),
        h("button", { type: "button", class: "deny", onclick: () => answer("deny") }, "Deny"),
        reason,
      ),
      problem,
    );
  }

  confirmed(e) {
    this.decided.add(e.tool_use_id);
    const tool = this.tools.get(e.tool_use_id);
    const note = h("div", { class: `decision ${e.result}` }, e.result === "allow" ? "Allowed" : `Denied${e.deny_message ? `: ${e.deny_message}` : ""}`);
    if (tool) replace(tool.actions, note);
    else this.add(note);
  }
}

export async function sessionView(main, [id], signal) {
  const [first, { prices }] = await Promise.all([api(`/v1/sessions/${id}`, { signal }), config()]);
  const status = h("span", { class: "status", "data-testid": "session-status" });
  const facts = h("dl", { class: "facts" });
  const streamState = h("span", { class: "stream-state muted" });
  const list = h("div", { class: "conversation", "data-testid": "conversation" });
  const problem = h("div");
  const input = h("textarea", { rows: 3, placeholder: "Send a message…", "aria-label": "Message" });
  const interrupt = h("button", { type: "button", class: "secondary", onclick: () => send([{ type: "user.interrupt" }]) }, "Interrupt");

  function show(session) {
    status.textContent = session.status;
    status.className = `status ${session.status}`;
    interrupt.disabled = session.status !== "running" && session.status !== "rescheduling";
    const usage = session.usage ?? {};
    replace(
      facts,
      [
        ["Agent", h("a", { href: `#/agents/${session.agent?.id}` }, fmt.agentLabel(session.agent))],
        ["Created", fmt.time(session.created_at)],
        ["Tokens in / out", `${fmt.tokens(usage.input_tokens)} / ${fmt.tokens(usage.output_tokens)}`],
        ["Cache read", fmt.tokens(usage.cache_read_input_tokens)],
        ["Active", fmt.duration(session.stats?.active_seconds ?? usage.active_seconds)],
        ["Est. cost", fmt.usd(estimatedCost(session, prices))],
      ].map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]),
    );
  }

  let refreshing = null;
  function refresh(event) {
    if (event?.type?.startsWith("session.status_")) {
      const shown = event.type.slice("session.status_".length);
      status.textContent = shown === "rescheduled" ? "rescheduling" : shown;
      status.className = `status ${status.textContent}`;
      interrupt.disabled = status.textContent !== "running" && status.textContent !== "rescheduling";
    }
    refreshing ??= api(`/v1/sessions/${id}`, { signal })
      .then(show, () => {})
      .finally(() => (refreshing = null));
  }

  async function send(events) {
    replace(problem);
    try {
      await sendEvents(id, events);
      return true;
    } catch (error) {
      replace(problem, errorBox(error));
      return false;
    }
  }

  const composer = h(
    "form",
    {
      class: "composer",
      onsubmit: async (event) => {
        event.preventDefault();
        const text = input.value.trim();
        if (text && (await send([{ type: "user.message", content: [{ type: "text", text }] }]))) input.value = "";
      },
    },
    input,
    h("div", { class: "row" }, h("button", { type: "submit" }, "Send"), interrupt),
  );

  replace(
    main,
    h("div", { class: "crumbs" }, h("a", { href: "#/sessions" }, "Sessions"), " / ", id),
    h("div", { class: "title" }, h("h1", {}, first.title || id), status, h("a", { class: "button secondary", href: `#/sessions/${id}/trace` }, "Trace"), streamState),
    facts,
    list,
    problem,
    composer,
  );
  show(first);

  const conversation = new Conversation(id, list, refresh);
  while (!signal.aborted) {
    try {
      const body = await openStream(id, { signal });
      streamState.textContent = "live";
      const early = [];
      let caughtUp = false;
      const pump = (async () => {
        for await (const frame of frames(body)) {
          if (caughtUp) conversation.frame(frame);
          else early.push(frame);
        }
      })();
      pump.catch(() => {}); // awaited below; this only keeps an early failure from going unhandled
      for (const event of await all(`/v1/sessions/${id}/events`, { limit: 1000 }, { signal })) conversation.event(event);
      caughtUp = true;
      early.splice(0).forEach((frame) => conversation.frame(frame));
      await pump;
      if (conversation.deleted) return;
    } catch (error) {
      if (signal.aborted) return;
      streamState.textContent = `reconnecting (${error.message})`;
    }
    if (signal.aborted) return;
    streamState.textContent = "reconnecting…";
    await when(signal, RECONNECT_MS);
  }
}
