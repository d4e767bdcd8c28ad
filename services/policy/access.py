"""Who may call which PolicyService RPC (docs/security.md, "Roles"): the rules ``Authorization``
applies to every call, and the conditions a request alone decides.

- An **admin** calls everything.
- A **tenant** reaches its own routing domains and what lies in them (subnets, lookup records,
  customer routes, their watch and next-hop questions): ``Grant.OWN``, which the store's tenant filter
  (``services.policy.tenancy``) applies. It creates and renames routing domains of its own name only.
  It reads what is no tenant's (provider addresses, hosts, the table's status), which placing its VMs
  needs, and writes none of it. ``CheckTable`` reports every tenant's unreadable keys: not a tenant's.
- A **host** (a vswitch agent) reads the table; its own status and registration it writes to etcd
  directly, so on this API it writes nothing (``CheckTable`` without quarantine).
- A **site** has no rights here: a replica site that moves a VM's records presents an admin (or the
  VM's tenant's) certificate to the policy service.
"""

from __future__ import annotations

from typing import Any

from overland.v1 import policy_pb2
from services.common.access import Grant, Rule, service_rules
from services.common.identity import Identity, Role

SERVICE = policy_pb2.DESCRIPTOR.services_by_name["PolicyService"]

A, T, H = Role.ADMIN, Role.TENANT, Role.HOST
ALLOW, OWN = Grant.ALLOW, Grant.OWN

# A tenant's own objects, read by agents too.
TENANT_READ = Rule({A: ALLOW, T: OWN, H: ALLOW})
TENANT_WRITE = Rule({A: ALLOW, T: OWN})
# What is no tenant's: provider addresses, hosts, the table's status.
SHARED_READ = Rule({A: ALLOW, T: ALLOW, H: ALLOW})
ADMIN_ONLY = Rule({A: ALLOW})


def _own_domain(identity: Identity, request: Any) -> str:
    """A tenant names only itself as a routing domain's tenant (create, update)."""
    if request.routing_domain.tenant_name != identity.name:
        return "a tenant's routing domains carry its own name as tenant_name"
    return ""


def _read_only_check(identity: Identity, request: Any) -> str:
    return "quarantine moves keys; an agent checks the table read-only" if request.quarantine else ""


DOMAIN_WRITE = Rule({A: ALLOW, T: OWN}, {T: _own_domain})

RULES = service_rules(
    SERVICE,
    {
        "CreateRoutingDomain": DOMAIN_WRITE,
        "GetRoutingDomain": TENANT_READ,
        "UpdateRoutingDomain": DOMAIN_WRITE,
        "DeleteRoutingDomain": TENANT_WRITE,
        "ListRoutingDomains": TENANT_READ,
        "CreateVirtualSubnet": TENANT_WRITE,
        "GetVirtualSubnet": TENANT_READ,
        "UpdateVirtualSubnet": TENANT_WRITE,
        "DeleteVirtualSubnet": TENANT_WRITE,
        "ListVirtualSubnets": TENANT_READ,
        "CreateProviderAddress": ADMIN_ONLY,
        "GetProviderAddress": SHARED_READ,
        "UpdateProviderAddress": ADMIN_ONLY,
        "DeleteProviderAddress": ADMIN_ONLY,
        "ListProviderAddresses": SHARED_READ,
        "CreateLookupRecord": TENANT_WRITE,
        "GetLookupRecord": TENANT_READ,
        "UpdateLookupRecord": TENANT_WRITE,
        "DeleteLookupRecord": TENANT_WRITE,
        "ListLookupRecords": TENANT_READ,
        "CreateCustomerRoute": TENANT_WRITE,
        "GetCustomerRoute": TENANT_READ,
        "UpdateCustomerRoute": TENANT_WRITE,
        "DeleteCustomerRoute": TENANT_WRITE,
        "ListCustomerRoutes": TENANT_READ,
        "BulkApplyLookupRecords": TENANT_WRITE,
        "MoveLookupRecords": TENANT_WRITE,
        "GetHost": SHARED_READ,
        "ListHosts": SHARED_READ,
        "WatchTable": TENANT_READ,
        "SelectNextHop": TENANT_READ,
        "GetTableStatus": SHARED_READ,
        "CheckTable": Rule({A: ALLOW, H: ALLOW}, {H: _read_only_check}),
    },
)
