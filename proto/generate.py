"""Export the JSON Schema of every Corral message shape from ``corral.contracts`` into ``proto/``.

python proto/generate.py           # rewrite proto/schemas and proto/subjects.json
python proto/generate.py --check   # exit 1 and name the stale files when proto/ is out of date
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel, TypeAdapter

from corral.contracts import (
    admin_rpc,
    credentials,
    egress,
    health,
    idempotency,
    log,
    mcp,
    repositories,
    rpc,
    sandbox,
    subjects,
    web,
)
from corral.contracts.api import admin, agents, environments, event_params, events, sessions, vaults
from corral.contracts.api.errors import ErrorBody
from corral.contracts.operation import Operation

HERE = Path(__file__).resolve().parent

GROUPS: dict[str, list[type[BaseModel]]] = {
    "api/requests": [
        agents.AgentCreateParams,
        agents.AgentUpdateParams,
        environments.EnvironmentCreateParams,
        environments.EnvironmentUpdateParams,
        sessions.SessionCreateParams,
        sessions.SessionUpdateParams,
        event_params.SendEventsParams,
        vaults.VaultCreateParams,
        vaults.VaultUpdateParams,
        vaults.CredentialCreateParams,
        vaults.CredentialUpdateParams,
        admin.WorkspaceCreateParams,
        admin.WorkspaceUpdateParams,
        admin.ApiKeyCreateParams,
        admin.ApiKeyUpdateParams,
    ],
    "api/objects": [
        agents.Agent,
        environments.Environment,
        sessions.Session,
        vaults.Vault,
        vaults.Credential,
        vaults.CredentialValidation,
        admin.Workspace,
        admin.ApiKey,
        ErrorBody,
    ],
    "bus/rpc": [
        rpc.RpcReply,
        rpc.ResolveKey,
        rpc.ResolvedKey,
        rpc.CreateApiKey,
        admin_rpc.IssueApiKey,
        admin_rpc.AdminCreate,
        admin_rpc.AdminGet,
        admin_rpc.AdminUpdate,
        admin_rpc.AdminList,
        admin_rpc.AdminPage,
        rpc.CreateObject,
        rpc.GetObject,
        rpc.UpdateObject,
        rpc.ObjectAction,
        rpc.ListObjects,
        rpc.Page,
        rpc.Deleted,
        rpc.CredentialRef,
        rpc.SaveCredential,
        rpc.AppendEvents,
        rpc.Appended,
        rpc.ListEvents,
        rpc.GetContext,
        rpc.SessionContext,
        rpc.Wake,
        health.HealthCheck,
        health.Health,
    ],
    "bus/kv": [idempotency.IdempotencyRecord],
    "bus/sandbox": [
        sandbox.Provision,
        sandbox.Provisioned,
        sandbox.Execute,
        sandbox.ToolOutcome,
        sandbox.ExecuteHeartbeat,
        sandbox.Cancel,
        sandbox.Cancelled,
        sandbox.Release,
        sandbox.Released,
    ],
    "bus/repositories": [
        repositories.RepositoryAccess,
        repositories.RepositoryMount,
        repositories.RegisterRepository,
        repositories.RepositoryRegistered,
        repositories.ForgetRepositories,
        repositories.RepositoriesForgotten,
        repositories.CheckRepository,
        repositories.RepositoryChecked,
        repositories.RepositoryFailure,
    ],
    "bus/egress": [
        egress.EgressPolicy,
        egress.OpenEgress,
        egress.EgressOpened,
        egress.CloseEgress,
        egress.EgressClosed,
        egress.TakeCredentialHostFailures,
        egress.CredentialHostFailure,
        egress.CredentialHostFailures,
    ],
    "bus/mcp": [
        mcp.ListMcpTools,
        mcp.McpTool,
        mcp.McpToolList,
        mcp.CallMcpTool,
        mcp.McpToolOutcome,
        mcp.CloseMcp,
        mcp.McpClosed,
    ],
    "bus/credentials": [
        credentials.CreateCredential,
        credentials.UpdateCredential,
        credentials.CredentialAction,
        credentials.DeleteVault,
    ],
    "bus/web": [
        web.FetchPage,
        web.FetchedPage,
        web.UserLocation,
        web.SearchWeb,
        web.SearchHit,
        web.SearchResults,
    ],
}
UNIONS: dict[str, tuple[str, TypeAdapter[Any]]] = {
    "SessionEvent": ("log", events.SESSION_EVENT_ADAPTER),
    "SessionRecord": ("log", log.SESSION_RECORD_ADAPTER),
    "CatalogRecord": ("log", log.CATALOG_RECORD_ADAPTER),
}


def render(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def operation_catalogue() -> dict[str, Any]:
    """Every ``Operation`` descriptor: its subject, queue group, request and reply shapes."""
    ops = (
        *rpc.StoreOps.ALL,
        *vars(sandbox.SandboxOps).values(),
        *vars(egress.EgressOps).values(),
        *vars(mcp.McpOps).values(),
        *credentials.CredentialOps.ALL,
        *vars(web.WebOps).values(),
        *vars(repositories.RepositoryOps).values(),
    )
    described: dict[str, Any] = {}
    for op in (o for o in ops if isinstance(o, Operation)):
        described[op.subject] = {
            "queue": op.queue,
            "request": op.request.__name__,
            "reply": getattr(op.reply_type, "__name__", "object"),
            "enveloped": op.enveloped,
            "bounded": op.bounded,
            "secret": op.secret,
        }
    probe = health.health_op("{service}")
    described[probe.subject] = {
        "queue": "{service}",
        "request": probe.request.__name__,
        "reply": probe.reply_type.__name__,
        "enveloped": probe.enveloped,
        "bounded": probe.bounded,
    }
    return described


#: Every key-value bucket, with the setting its TTL comes from (its owner and readers use the same).
KV_BUCKETS: tuple[tuple[subjects.KeyValueSpec, str], ...] = (
    (subjects.lease_spec(0.0), "CORRAL_HARNESS_LEASE_TTL_S"),
    (subjects.idempotency_spec(0.0), "CORRAL_GATEWAY_IDEMPOTENCY_TTL_S"),
    (subjects.tool_results_spec(0.0), "CORRAL_SANDBOX_RESULT_TTL_S"),
    (subjects.sandboxes_spec(0.0), "CORRAL_SANDBOX_RECORD_TTL_S"),
    (subjects.egress_spec(0.0), "CORRAL_CREDENTIAL_PROXY_EGRESS_GRANT_TTL_S"),
)


def subject_catalogue() -> dict[str, Any]:
    return {
        "streams": {
            spec.name: spec.model_dump(mode="json")
            for spec in (subjects.SESSIONS_SPEC, subjects.CATALOG_SPEC, subjects.WAKE_SPEC)
        },
        "subjects": {
            "session_log": {"pattern": subjects.session_log("{session_id}"), "payload": "log/SessionRecord"},
            "agent_log": {"pattern": subjects.agent_log("{agent_id}"), "payload": "log/CatalogRecord"},
            "environment_log": {
                "pattern": subjects.environment_log("{environment_id}"),
                "payload": "log/CatalogRecord",
            },
            "api_key_log": {"pattern": subjects.api_key_log("{key_id}"), "payload": "log/CatalogRecord"},
            "wake": {"pattern": subjects.wake("{session_id}"), "payload": "bus/rpc/Wake"},
            "deltas": {
                "pattern": subjects.deltas("{session_id}"),
                "payload": "event_start | event_delta (stream-only)",
            },
            "store_rpc": {"pattern": subjects.store_rpc("{op}"), "payload": "bus/rpc/* -> bus/rpc/RpcReply"},
            "health": {"pattern": subjects.health("{service}"), "payload": "bus/rpc/Health"},
            "sandbox_rpc": {
                "pattern": sandbox.sandbox_rpc("{op}"),
                "payload": "bus/sandbox/* -> bus/rpc/RpcReply",
            },
            "execute_heartbeat": {
                "pattern": sandbox.execute_heartbeat("{session_id}", "{tool_use_id}"),
                "payload": (
                    "bus/sandbox/ExecuteHeartbeat (core NATS, every "
                    f"{sandbox.EXECUTE_HEARTBEAT_INTERVAL_S:g} s while an execute is handled)"
                ),
            },
            "egress_rpc": {
                "pattern": egress.egress_rpc("{op}"),
                "payload": "bus/egress/* -> bus/rpc/RpcReply",
            },
            "mcp_rpc": {
                "pattern": mcp.mcp_rpc("{op}"),
                "payload": "bus/mcp/* -> bus/rpc/RpcReply",
            },
            "web_rpc": {
                "pattern": web.web_rpc("{op}"),
                "payload": "bus/web/* -> bus/rpc/RpcReply",
            },
            "repositories_rpc": {
                "pattern": repositories.repositories_rpc("{op}"),
                "payload": "bus/repositories/* -> bus/rpc/RpcReply (core NATS only: register carries a token)",
            },
        },
        "store_operations": sorted(v for k, v in vars(rpc.Op).items() if k.isupper()),
        "sandbox_operations": sorted(v for k, v in vars(sandbox.SandboxOp).items() if k.isupper()),
        "egress_operations": sorted(v for k, v in vars(egress.EgressOp).items() if k.isupper()),
        "mcp_operations": sorted(v for k, v in vars(mcp.McpOp).items() if k.isupper()),
        "web_operations": sorted(v for k, v in vars(web.WebOp).items() if k.isupper()),
        "operations": operation_catalogue(),
        "kv_buckets": {
            spec.name: {
                "owner": spec.owner,
                "description": spec.description,
                "ttl_s": setting,
                "history": spec.history,
                "storage": spec.storage,
            }
            for spec, setting in KV_BUCKETS
        },
        "object_buckets": {
            subjects.BODIES_BUCKET: "request and reply bodies larger than one message (Corral-Body-Ref)",
        },
    }


def expected_files() -> dict[Path, str]:
    files: dict[Path, str] = {}
    for group, models in GROUPS.items():
        for model in models:
            files[HERE / "schemas" / group / f"{model.__name__}.json"] = render(model.model_json_schema())
    for name, (group, adapter) in UNIONS.items():
        files[HERE / "schemas" / group / f"{name}.json"] = render(adapter.json_schema())
    files[HERE / "subjects.json"] = render(subject_catalogue())
    return files


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if proto/ differs from the contracts")
    args = parser.parse_args()
    files = expected_files()
    present = set((HERE / "schemas").rglob("*.json")) | {HERE / "subjects.json"}
    stale = sorted(
        str(p.relative_to(HERE.parent)) for p, text in files.items() if not p.exists() or p.read_text() != text
    )
    extra = sorted(str(p.relative_to(HERE.parent)) for p in present - set(files) if p.exists())
    if args.check:
        if stale or extra:
            sys.stderr.write("proto/ is stale; run `make gen` and commit the result:\n")
            for name in stale + extra:
                sys.stderr.write(f"  {name}\n")
            return 1
        return 0
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    for name in extra:
        (HERE.parent / name).unlink()
    sys.stdout.write(f"wrote {len(files)} files under proto/\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
