// Environments, vaults (metadata only: the API never returns a secret) and API keys (the admin
// API, which needs an admin key).

import { all, ApiError } from "../api.js";
import { h, replace, table } from "../dom.js";
import * as fmt from "../format.js";

export async function environmentsView(main, _params, signal) {
  const environments = await all("/v1/environments", { limit: 100 }, { signal });
  replace(
    main,
    h("h1", {}, "Environments"),
    table(
      [
        { label: "Name", cell: (e) => e.name },
        { label: "Type", cell: (e) => e.config?.type ?? "—" },
        { label: "Networking", cell: (e) => e.config?.networking?.type ?? "—" },
        {
          label: "Packages",
          cell: (e) =>
            Object.entries(e.config?.packages ?? {})
              .filter(([, list]) => Array.isArray(list) && list.length)
              .map(([manager, list]) => `${manager}: ${list.join(" ")}`)
              .join("; ") || "—",
        },
        { label: "Created", cell: (e) => fmt.time(e.created_at) },
        { label: "Id", cell: (e) => h("code", {}, e.id) },
      ],
      environments,
      "No environments yet.",
    ),
  );
}

export async function vaultsView(main, _params, signal) {
  const vaults = await all("/v1/vaults", { limit: 100 }, { signal });
  const credentials = await Promise.all(
    vaults.map((v) => all(`/v1/vaults/${v.id}/credentials`, { limit: 100 }, { signal })),
  );
  replace(
    main,
    h("h1", {}, "Vaults"),
    h("p", { class: "muted" }, "Metadata only: secrets never leave the credential store."),
    table(
      [
        { label: "Name", cell: (v) => v.display_name ?? v.name ?? "—" },
        {
          label: "Credentials",
          cell: (v) =>
            credentials[vaults.indexOf(v)]
              .map((c) => `${c.display_name ?? c.id} (${c.auth?.type ?? "?"}${c.auth?.mcp_server_url ? ` · ${c.auth.mcp_server_url}` : ""})`)
              .join(", ") || "—",
        },
        { label: "Metadata", cell: (v) => Object.entries(v.metadata ?? {}).map(([k, x]) => `${k}=${x}`).join(", ") || "—" },
        { label: "Created", cell: (v) => fmt.time(v.created_at) },
        { label: "Id", cell: (v) => h("code", {}, v.id) },
      ],
      vaults,
      "No vaults yet.",
    ),
  );
}

export async function keysView(main, _params, signal) {
  let keys;
  let workspaces;
  try {
    [keys, workspaces] = await Promise.all([
      all("/v1/organizations/api_keys", { limit: 1000 }, { signal }),
      all("/v1/organizations/workspaces", { limit: 1000 }, { signal }),
    ]);
  } catch (error) {
    if (!(error instanceof ApiError) || error.status !== 403) throw error;
    return replace(
      main,
      h("h1", {}, "API keys"),
      h("p", { class: "notice" }, "Listing API keys needs an admin key (make up writes one to .corral/admin-key). Sign in with it to see them."),
    );
  }
  const names = new Map(workspaces.map((w) => [w.id, w.name]));
  replace(
    main,
    h("h1", {}, "API keys"),
    h("p", { class: "muted" }, "Keys are shown once, when they are made; this lists their hints."),
    table(
      [
        { label: "Name", cell: (k) => k.name },
        { label: "Hint", cell: (k) => h("code", {}, k.partial_key_hint ?? "—") },
        { label: "Workspace", cell: (k) => names.get(k.workspace_id) ?? k.workspace_id ?? "—" },
        { label: "Role", cell: (k) => k.role ?? "user" },
        { label: "Status", cell: (k) => h("span", { class: `status ${k.status}` }, k.status) },
        { label: "Created", cell: (k) => fmt.time(k.created_at) },
        { label: "Id", cell: (k) => h("code", {}, k.id) },
      ],
      keys,
      "No keys.",
    ),
  );
}
