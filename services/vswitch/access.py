"""Who may call which VswitchService RPC of one host's agent (docs/security.md, "Roles").

The agent's API plugs VMs into the host's switch (``AttachPort``, ``DetachPort``) and configures its
extensions (``ConfigureExtension``): an **admin** may call everything; a **host** identity only on its
own agent (the host the agent serves), which is what a host's own tooling (the replica site that
starts its VMs) presents. Tenants and other hosts have no business here: a tenant's VMs are attached
by the operator, not by the tenant.
"""

from __future__ import annotations

from typing import Any

from overland.v1 import vswitch_pb2
from services.common.access import Grant, Rule, service_rules
from services.common.identity import Identity, Role

SERVICE = vswitch_pb2.DESCRIPTOR.services_by_name["VswitchService"]


def rules(host_name: str) -> dict[str, Rule]:
    """The access rules of the agent of ``host_name``."""

    def this_host(identity: Identity, _request: Any) -> str:
        return "" if identity.name == host_name else "a host identity calls its own host's agent only"

    own = Rule({Role.ADMIN: Grant.ALLOW, Role.HOST: Grant.ALLOW}, {Role.HOST: this_host})
    return service_rules(SERVICE, {method.name: own for method in SERVICE.methods})
