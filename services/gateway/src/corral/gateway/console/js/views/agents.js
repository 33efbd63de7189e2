// Agents, their versions, and a line diff between two versions.

import { all, api } from "../api.js";
import { diffLines, stableJson } from "../diff.js";
import { h, replace, table } from "../dom.js";
import * as fmt from "../format.js";

export async function agentsView(main, _params, signal) {
  const agents = await all("/v1/agents", { limit: 100 }, { signal });
  replace(
    main,
    h("h1", {}, "Agents"),
    table(
      [
        { label: "Name", cell: (a) => h("a", { href: `#/agents/${a.id}` }, a.name) },
        { label: "Model", cell: (a) => fmt.modelOf(a) ?? "—" },
        { label: "Version", cell: (a) => String(a.version) },
        { label: "Tools", cell: (a) => (a.tools ?? []).map((t) => t.name ?? t.type).join(", ") || "—" },
        { label: "Updated", cell: (a) => fmt.time(a.updated_at) },
        { label: "Id", cell: (a) => h("code", {}, a.id) },
      ],
      agents,
      "No agents yet.",
    ),
  );
}

/** What a version is, without what changes with every version whatever its content. */
function comparable(version) {
  const { updated_at: _u, created_at: _c, version: _v, ...rest } = version;
  return stableJson(rest).split("\n");
}

function diffView(from, to) {
  const lines = diffLines(comparable(from), comparable(to));
  if (lines.every((l) => l.op === " ")) return h("p", { class: "muted" }, "These versions are the same.");
  return h(
    "pre",
    { class: "diff", "data-testid": "diff" },
    lines.map((l) => h("span", { class: l.op === "+" ? "add" : l.op === "-" ? "del" : "same" }, `${l.op} ${l.line}`)),
  );
}

export async function agentView(main, [id], signal) {
  const [agent, versions] = await Promise.all([
    api(`/v1/agents/${id}`, { signal }),
    all(`/v1/agents/${id}/versions`, { limit: 100 }, { signal }),
  ]);
  versions.sort((a, b) => a.version - b.version);
  const pick = (name, chosen) =>
    h("select", { name, "aria-label": name }, versions.map((v) => h("option", { value: String(v.version), selected: v.version === chosen }, `v${v.version}`)));
  const latest = versions.at(-1)?.version ?? agent.version;
  const fromSelect = pick("from", Math.max(latest - 1, versions[0]?.version ?? 1));
  const toSelect = pick("to", latest);
  const out = h("div");
  const byNumber = (n) => versions.find((v) => v.version === Number(n));
  const update = () => replace(out, diffView(byNumber(fromSelect.value), byNumber(toSelect.value)));
  fromSelect.addEventListener("change", update);
  toSelect.addEventListener("change", update);
  replace(
    main,
    h("div", { class: "crumbs" }, h("a", { href: "#/agents" }, "Agents"), " / ", agent.name),
    h("h1", {}, agent.name),
    h("p", { class: "muted" }, `${agent.id} · ${fmt.modelOf(agent)} · version ${agent.version} · ${versions.length} version(s)`),
    table(
      [
        { label: "Version", cell: (v) => `v${v.version}` },
        { label: "Updated", cell: (v) => fmt.time(v.updated_at) },
        { label: "System prompt", cell: (v) => (v.system ?? "").slice(0, 80) || "—" },
      ],
      [...versions].reverse(),
    ),
    h("h2", {}, "Diff"),
    h("div", { class: "filters" }, h("label", {}, "From ", fromSelect), h("label", {}, "to ", toSelect)),
    out,
  );
  update();
}
