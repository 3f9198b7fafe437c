"""Test fixtures' building blocks: organizations with members, keys and a protocol-level executor."""

import asyncio
import uuid
from dataclasses import dataclass, field
from typing import Any

from nodeplane.executor.controlplane_client import ControlPlaneClient
from nodeplane.protocol import (
    AssignedNodeSpec,
    ChainCapability,
    ClientCapability,
    ExecutorCapabilities,
    ExecutorKind,
    KnownRevision,
    NodeObservation,
    ObservedNodeState,
    ObservedProcess,
    ProcessStatus,
    RoleCapability,
    RuntimeEvent,
    SyncExecutorRequest,
)
from tests.support.gql import Client
from tests.support.tls import TLS

CAPABILITIES = ExecutorCapabilities(
    chains=[
        ChainCapability(
            chain="litecoin",
            networks=["mainnet", "testnet", "regtest"],
            node_types=["full", "archive"],
            roles=[
                RoleCapability(
                    role="node",
                    clients=[
                        ClientCapability(
                            name="litecoind",
                            versions=["0.21.4", "0.21.3"],
                            managed_flags=[
                                "datadir",
                                "conf",
                                "rpcport",
                                "port",
                                "rpcuser",
                                "rpcpassword",
                            ],
                            managed_config_keys=[
                                "datadir",
                                "rpcport",
                                "port",
                                "rpcuser",
                                "rpcpassword",
                            ],
                        )
                    ],
                )
            ],
        ),
        ChainCapability(
            chain="ethereum",
            networks=["mainnet", "sepolia", "hoodi"],
            roles=[
                RoleCapability(
                    role="execution",
                    clients=[
                        ClientCapability(
                            name="geth",
                            versions=["1.14.12"],
                            managed_flags=["datadir", "authrpc.jwtsecret"],
                        )
                    ],
                ),
                RoleCapability(
                    role="consensus",
                    clients=[
                        ClientCapability(
                            name="lighthouse", versions=["5.3.0"], managed_flags=["datadir"]
                        )
                    ],
                ),
            ],
        ),
    ]
)

LITECOIN_SPEC: dict[str, Any] = {
    "chain": "litecoin",
    "network": "regtest",
    "clients": {"node": {"name": "litecoind", "version": "0.21.4"}},
}
ETHEREUM_SPEC: dict[str, Any] = {
    "chain": "ethereum",
    "network": "sepolia",
    "clients": {
        "execution": {"name": "geth", "version": "1.14.12"},
        "consensus": {"name": "lighthouse", "version": "5.3.0"},
    },
}

CREATE_NODE = """
mutation($input: CreateNodeInput!) {
  createNode(input: $input) { id name phase desiredState revision observedRevision pendingChange stale spec }
}"""
NODE = """
query($id: UUID!) {
  node(id: $id) { id name phase desiredState revision observedRevision pendingChange stale spec observed
    executor { id name status } }
}"""
LIFECYCLE = """
mutation($id: UUID!, $action: LifecycleAction!, $expected: Int) {
  requestNodeLifecycleAction(nodeId: $id, action: $action, expectedRevision: $expected) {
    id phase desiredState revision spec }
}"""
EVENTS = """
query($filter: EventFilter, $first: Int, $after: String) {
  events(filter: $filter, first: $first, after: $after) {
    items { id type level source message actor actorType nodeId nodeName executorId payload createdAt }
    pageInfo { endCursor hasNextPage }
  }
}"""


def unique(prefix: str) -> str:
    """A short unique name for test isolation inside one shared server."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@dataclass
class Org:
    """An organization on a test server, with its owner signed in."""

    id: str
    name: str
    owner: Client
    admin: Client  # the system admin, in another organization
    base_url: str

    def add_member(self, role: str) -> Client:
        """Invite and sign in a new member with `role` (OWNER, ADMIN or MEMBER)."""
        email = f"{unique(role.lower())}@example.test"
        token = self.owner(
            "mutation($e: String!, $r: Role!) { inviteMember(email: $e, role: $r) { token } }",
            {"e": email, "r": role},
        )["inviteMember"]["token"]
        data = Client(self.base_url)(
            "mutation($t: String!, $p: String!) { acceptInvite(token: $t, password: $p) { token } }",
            {"t": token, "p": "member-password-1"},
        )
        return Client(self.base_url, data["acceptInvite"]["token"])

    def executor_key(self, name: str = "executor", expires_at: str | None = None) -> str:
        """A new executor API key's secret."""
        data = self.owner(
            "mutation($n: String!, $x: DateTime) { createApiKey(name: $n, kind: EXECUTOR, expiresAt: $x) { secret } }",
            {"n": name, "x": expires_at},
        )
        secret: str = data["createApiKey"]["secret"]
        return secret


def make_org(server_url: str, admin: Client) -> Org:
    """A new organization owned by a new user, created by the system admin."""
    name = unique("org")
    owner_email = f"{unique('owner')}@example.test"
    data = admin(
        "mutation($n: String!, $e: String!) { createOrganization(name: $n, ownerEmail: $e) { organization { id } inviteToken } }",
        {"n": name, "e": owner_email},
    )["createOrganization"]
    login = Client(server_url)(
        "mutation($t: String!, $p: String!) { acceptInvite(token: $t, password: $p) { token } }",
        {"t": data["inviteToken"], "p": "owner-password-1"},
    )
    owner = Client(server_url, login["acceptInvite"]["token"])
    return Org(data["organization"]["id"], name, owner, admin, server_url)


def running(role: str = "node", **metrics: Any) -> ObservedProcess:
    """An observed process in status running (metrics optional)."""
    return ObservedProcess(role=role, status=ProcessStatus.RUNNING, **metrics)


@dataclass
class FakeExecutor:
    """Speaks the executor protocol with a real key over HTTP; the test decides what it observes."""

    base_url: str
    api_key: str
    name: str = field(default_factory=lambda: unique("host"))
    kind: ExecutorKind = ExecutorKind.AGENT
    capabilities: ExecutorCapabilities = CAPABILITIES
    id: str | None = None
    # The agent process it speaks as (sent with every call), and the ones it succeeds.
    instance_id: uuid.UUID | None = None
    previous_instance_ids: list[uuid.UUID] = field(default_factory=list)

    def _run(self, coro_fn: Any) -> Any:
        async def go() -> Any:
            client = ControlPlaneClient(
                self.base_url, self.api_key, instance_id=self.instance_id, verify=TLS
            )
            try:
                return await coro_fn(client)
            finally:
                await client.aclose()

        return asyncio.run(go())

    def sync(self, observations: dict[str, ObservedNodeState] | None = None) -> dict[str, Any]:
        """One heartbeat carrying `observations` (node id → observed state)."""
        return self.sync_pairs(list((observations or {}).items()))

    def sync_request(
        self, observations: list[tuple[str, ObservedNodeState]]
    ) -> SyncExecutorRequest:
        """The heartbeat this executor sends with `observations`, in this order."""
        return SyncExecutorRequest(
            name=self.name,
            kind=self.kind,
            version="0.1.0-test",
            capabilities=self.capabilities,
            nodes=[
                NodeObservation(node_id=uuid.UUID(nid), observed=obs) for nid, obs in observations
            ],
            instance_id=self.instance_id,
            previous_instance_ids=self.previous_instance_ids,
        )

    def sync_pairs(self, observations: list[tuple[str, ObservedNodeState]]) -> dict[str, Any]:
        """One heartbeat carrying `observations` in this order (a node may appear twice)."""
        request = self.sync_request(observations)
        result: dict[str, Any] = self._run(lambda c: c.sync(request))
        self.id = result["executor"]["id"]
        return result

    def observe(
        self, node_id: str, revision: int, *statuses: ProcessStatus, apply_error: str | None = None
    ) -> None:
        """Report one node's processes (role `node`, or `p0`, `p1`... for several)."""
        roles = ["node"] if len(statuses) == 1 else [f"p{i}" for i in range(len(statuses))]
        processes = [
            ObservedProcess(role=r, status=s) for r, s in zip(roles, statuses, strict=True)
        ]
        self.sync(
            {
                node_id: ObservedNodeState(
                    revision=revision, processes=processes, apply_error=apply_error
                )
            }
        )

    def poll(
        self,
        known: dict[str, int] | None = None,
        wait: float = 0.0,
        deleted: set[str] | None = None,
    ) -> list[AssignedNodeSpec]:
        """The spec long-poll."""
        held = [
            KnownRevision(node_id=uuid.UUID(k), revision=v, deleted=k in (deleted or set()))
            for k, v in (known or {}).items()
        ]
        result: list[AssignedNodeSpec] = self._run(lambda c: c.poll_specs(held, wait))
        return result

    def confirm_teardown(self, node_id: str) -> bool:
        result: bool = self._run(lambda c: c.confirm_teardown(uuid.UUID(node_id)))
        return result

    def report(self, *events: RuntimeEvent) -> int:
        result: int = self._run(lambda c: c.report_events(list(events)))
        return result

    def log_sessions(self, known: list[uuid.UUID] | None = None, wait: float = 0.0) -> list[Any]:
        """The live-log session long-poll."""
        result: list[Any] = self._run(lambda c: c.poll_log_sessions(known or [], wait))
        return result

    def post_log_chunk(self, chunk: Any) -> bool:
        """Lines of a live-log session; False when it is not open (or not this executor's)."""
        result: bool = self._run(lambda c: c.post_log_chunk(chunk))
        return result
