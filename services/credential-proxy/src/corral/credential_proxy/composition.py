"""The credential-proxy's composition root: this machine's interface addresses (which egress never
reaches; the service does not start when they cannot be read) -> the OpenBao login (AppRole, its
token kept fresh by a task until the stop, then revoked; a failed login is retried and shown by
health, it does not stop the service) -> bus, egress grants -> session repositories (their tokens in
OpenBao) and the git proxy every egress socket hands ``git.corral.invalid`` requests to -> the egress
proxies, one unix socket per session under ``CORRAL_CREDENTIAL_PROXY_EGRESS_SOCKET_DIR`` (re-opened from
their grants; none when it is unset) -> the MCP client's connection pool -> the credential secret store
(OpenBao) -> the web tools (``web_fetch`` under the same destination rules, ``web_search`` through the
configured backend, if any) -> serving ``corral.rpc.egress.*`` (and this machine's
``corral.rpc.egress.host.<CORRAL_CREDENTIAL_PROXY_HOST_ID>.*``), ``corral.rpc.mcp.*``,
``corral.rpc.credentials.*``, ``corral.rpc.web.*``, ``corral.rpc.repositories.*`` and health. It is
ready once the grants are restored and requests are served.
"""

from __future__ import annotations

import logging
import ssl

from corral.bus import Bus, PullConsumer, StreamMismatch, instance_name
from corral.contracts import subjects
from corral.credential_proxy import session_endings
from corral.credential_proxy.credentials import Credentials
from corral.credential_proxy.destinations import system_resolve
from corral.credential_proxy.egress import Egress
from corral.credential_proxy.egress_credentials import EgressCredentials
from corral.credential_proxy.gitproxy import GitProxy
from corral.credential_proxy.grants import Grants
from corral.credential_proxy.hosts import operator_allows
from corral.credential_proxy.interception import upstream_context
from corral.credential_proxy.interfaces import OwnAddresses
from corral.credential_proxy.mcp_clients import McpClients, Timeouts
from corral.credential_proxy.mcp_destinations import Rules
from corral.credential_proxy.oauth_refresh import Refresher
from corral.credential_proxy.repositories import Repositories
from corral.credential_proxy.repository_rpc import repository_operations
from corral.credential_proxy.rpc import Service, serve_all, store_caller
from corral.credential_proxy.secret_store import SecretStore
from corral.credential_proxy.session_credentials import McpCredentials, SessionCredentials
from corral.credential_proxy.settings import Settings
from corral.credential_proxy.token_endpoint import TokenEndpoint, rules_vet
from corral.credential_proxy.vault import Vault
from corral.credential_proxy.webfetch import WebFetcher
from corral.credential_proxy.websearch import WebSearch
from corral.runner import Lifetime, Refused

logger = logging.getLogger("corral.credential_proxy")


async def serve(settings: Settings, life: Lifetime) -> None:
    instance = instance_name()
    own = own_addresses(settings)
    stack = life.stack
    vault = await stack.enter_async_context(Vault(settings.openbao, timeout=settings.health_probe_timeout_s).running())
    bus = await stack.enter_async_context(Bus.connect(settings.nats, name="credential-proxy"))
    try:
        grants = await Grants.open(bus, ttl_s=settings.egress.grant_ttl_s, host=settings.host_id)
    except StreamMismatch as exc:  # CORRAL_CREDENTIAL_PROXY_EGRESS_GRANT_TTL_S changed since the bucket was made
        raise Refused(str(exc)) from None
    repositories = Repositories(vault, settings.git, settings.egress, resolve=system_resolve, own_addresses=own.current)
    git = GitProxy(repositories, idle_timeout_s=settings.egress.idle_timeout_s)
    mcp_settings = settings.mcp
    rules = Rules(
        own_addresses=own.current, admitted=settings.destinations.admitted, timeout_s=mcp_settings.connect_timeout_s
    )
    secrets = SecretStore(vault.client, timeout_s=settings.secret_store_timeout_s)
    store = store_caller(bus, timeout_s=settings.secret_store_timeout_s)
    refresher = Refresher(
        secrets=secrets, store=store, endpoint=TokenEndpoint(rules_vet(rules), timeout_s=mcp_settings.connect_timeout_s)
    )
    resolver = SessionCredentials(secrets=secrets, store=store, refresher=refresher)
    egress_credentials = EgressCredentials(resolver, state_dir=settings.egress.state_dir)
    egress = await stack.enter_async_context(
        Egress(
            settings.egress,
            grants,
            own_addresses=own.current,
            git=git,
            credentials=egress_credentials,
            upstream_tls=upstream_tls(settings),
        ).running()
    )
    await egress.restore()
    timeouts = Timeouts(
        connect_s=mcp_settings.connect_timeout_s,
        list_s=mcp_settings.list_timeout_s,
        call_s=mcp_settings.call_timeout_s,
        idle_s=mcp_settings.idle_timeout_s,
    )
    credentials = Credentials(secrets=secrets, store=store)
    mcp = await stack.enter_async_context(McpClients(rules, timeouts, McpCredentials(resolver)).running())

    async def bind_endings() -> PullConsumer | None:
        return await bus.bind(subjects.MCP_SESSION_ENDINGS_SPEC)

    life.background(session_endings.follow(bind_endings, mcp.close), name="mcp-session-endings")
    service = Service(
        instance=instance,
        egress=egress,
        vault=vault,
        probe_timeout_s=settings.health_probe_timeout_s,
        credentials=credentials,
        fetcher=WebFetcher(settings.web, settings.egress, own_addresses=own.current),
        search=WebSearch.from_settings(settings.web),
        mcp=mcp,
        host=settings.host_id,
    )
    await stack.enter_async_context(serve_all(bus, service))
    await stack.enter_async_context(repository_operations(repositories).serve(bus))
    state = await vault.probe(settings.health_probe_timeout_s)
    life.ready(
        instance=instance,
        host=settings.host_id,
        vault=state,
        egress_socket_dir=str(settings.egress.socket_dir or "unset: no egress"),
        egress_listeners=egress.count(),
        web_search="configured" if service.search.configured else "not configured",
    )


def upstream_tls(settings: Settings) -> ssl.SSLContext:
    """How intercepted hosts are verified: the system's CAs, plus the operator's file when set.

    Raises:
        Refused: ``CORRAL_CREDENTIAL_PROXY_EGRESS_UPSTREAM_CA_FILE`` cannot be read or holds no certificate.
    """
    ca_file = settings.egress.upstream_ca_file
    try:
        return upstream_context(ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise Refused(
            f"CORRAL_CREDENTIAL_PROXY_EGRESS_UPSTREAM_CA_FILE={ca_file} cannot be used ({exc}); give a readable "
            "PEM file of CA certificates, or unset it to trust the system's CAs only",
            exit_code=1,
        ) from None


def own_addresses(settings: Settings) -> OwnAddresses:
    """This machine's interface addresses, read now (they are read again for every destination).

    Raises:
        Refused: they cannot be read; egress would not know which addresses to refuse.
    """
    try:
        own = OwnAddresses()
    except OSError as exc:
        raise Refused(
            f"cannot read this machine's interface addresses over rtnetlink ({exc}), so egress cannot refuse "
            "them; run the credential-proxy where it can open an AF_NETLINK socket (a plain process or host "
            "networking)",
            exit_code=1,
        ) from None
    allowed = sorted(str(a) for a in own.current() if operator_allows(a, settings.egress.allow_addresses))
    if allowed:
        logger.warning(
            "egress allows addresses of this machine: sandboxes can reach its services on them",
            extra={"fields": {"addresses": allowed, "setting": "CORRAL_CREDENTIAL_PROXY_EGRESS_ALLOW_ADDRESSES"}},
        )
    return own
