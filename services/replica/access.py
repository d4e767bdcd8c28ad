"""Who may call a replica site's services (docs/security.md, "Roles").

Replication management (``ReplicaService``) and the site's VMs (``VmService``) are an **admin**'s. The
receiving side of replication (``ReplicaReceiverService``, on a DR site) is for other sites: its own
allow-list decides which primary may send (by the client certificate's CN, ``dr/servicer.py``), so it
admits an admin, a **site** identity and a certificate that names no Overland identity (a site
certificate issued before roles); tenants and hosts are refused before the allow-list is asked.
"""

from __future__ import annotations

from collections.abc import Mapping

from overland.v1 import replica_pb2, vm_pb2
from services.common.access import Grant, Rule, service_rules
from services.common.identity import Role

_ADMIN = Rule({Role.ADMIN: Grant.ALLOW})
_SITES = Rule({Role.ADMIN: Grant.ALLOW, Role.SITE: Grant.ALLOW}, unnamed=Grant.ALLOW)


def _all(service_name: str, module: object, rule: Rule) -> Mapping[str, Rule]:
    service = module.DESCRIPTOR.services_by_name[service_name]  # type: ignore[attr-defined]
    return service_rules(service, {method.name: rule for method in service.methods})


RULES: dict[str, Rule] = {
    **_all("ReplicaService", replica_pb2, _ADMIN),
    **_all("VmService", vm_pb2, _ADMIN),
    **_all("ReplicaReceiverService", replica_pb2, _SITES),
}
