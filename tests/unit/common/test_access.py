"""Who may call what: identities from certificate URIs and the pure decision over every service's
rules (services/common/identity.py, services/common/access.py and each service's access.py)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from overland.v1 import policy_pb2, types_pb2, vswitch_pb2
from services.common.access import Grant, Rule, decide, service_rules
from services.common.identity import (
    ANONYMOUS,
    LOCAL,
    MAX_NAME_CHARS,
    Identity,
    Role,
    identity_from,
    identity_uri,
    parse_identity_uri,
)
from services.policy.access import RULES as POLICY_RULES
from services.policy.access import SERVICE as POLICY_SERVICE
from services.replica.access import RULES as REPLICA_RULES
from services.vswitch.access import rules as vswitch_rules

names = st.text(
    st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp", "Co", "Cn")),
    min_size=1,
    max_size=MAX_NAME_CHARS,
).filter(str.isprintable)
roles = st.sampled_from(list(Role))
identities = st.builds(Identity, roles, names)
policy_methods = st.sampled_from(sorted(POLICY_RULES))
# What only an admin may change: provider addresses.
ADMIN_ONLY = {f"/{POLICY_SERVICE.full_name}/{n}" for n in ("CreateProviderAddress", "DeleteProviderAddress")}


@given(roles, names)
def test_identity_uri_round_trips(role: Role, name: str) -> None:
    assert parse_identity_uri(identity_uri(role, name)) == (role, name)


@given(st.text(max_size=300))
def test_parsing_any_text_never_raises(text: str) -> None:
    parsed = parse_identity_uri(text)
    assert (
        parsed is None or identity_uri(*parsed) == text or parse_identity_uri(identity_uri(*parsed)) == parsed
    )


def test_a_certificate_names_one_identity_or_none() -> None:
    uri = identity_uri(Role.TENANT, "Contoso Ltd").encode()
    assert identity_from((uri,), b"CN=x") == Identity(Role.TENANT, "Contoso Ltd")
    other = identity_uri(Role.ADMIN, "eve").encode()
    assert identity_from((uri, other), b"CN=x").role is None
    assert identity_from((b"overland://root/eve",), b"CN=x").role is None
    assert identity_from((b"spiffe://example/x",), b"CN=x").role is None
    assert "CN=x" in identity_from((), b"CN=x").name


@given(identities, policy_methods)
def test_an_admin_may_call_everything_and_others_never_the_admin_only(
    identity: Identity, method: str
) -> None:
    admin = Identity(Role.ADMIN, identity.name)
    assert decide(POLICY_RULES, admin, method, None).grant is Grant.ALLOW
    if method in ADMIN_ONLY and identity.role is not Role.ADMIN:
        assert decide(POLICY_RULES, identity, method, None).grant is None


@given(identities, policy_methods, names.map(lambda name: f"Other Tenant {name}"))
def test_a_refusal_names_the_caller_and_nothing_stored(identity: Identity, method: str, other: str) -> None:
    request = policy_pb2.CreateRoutingDomainRequest(
        routing_domain=types_pb2.RoutingDomain(rdid="r", tenant_name=other)
    )
    decision = decide(POLICY_RULES, identity, method, request if method.endswith("RoutingDomain") else None)
    if decision.grant is None:
        assert str(identity) in decision.message
        if other != identity.name:
            assert other not in decision.message.replace(str(identity), "")


@given(names, names)
def test_a_tenant_creates_domains_of_its_own_name_only(tenant: str, named: str) -> None:
    method = f"/{POLICY_SERVICE.full_name}/CreateRoutingDomain"
    request = policy_pb2.CreateRoutingDomainRequest(routing_domain=types_pb2.RoutingDomain(tenant_name=named))
    decision = decide(POLICY_RULES, Identity(Role.TENANT, tenant), method, request)
    assert (decision.grant is Grant.OWN) == (tenant == named)


@given(names, policy_methods)
def test_a_tenant_reaches_only_its_own_or_shared_objects(tenant: str, method: str) -> None:
    grant = decide(POLICY_RULES, Identity(Role.TENANT, tenant), method, None).grant
    shared = {"GetProviderAddress", "ListProviderAddresses", "GetHost", "ListHosts", "GetTableStatus"}
    if grant is Grant.ALLOW:
        assert method.rpartition("/")[2] in shared


@given(policy_methods)
def test_a_host_reads_and_never_writes_the_table(method: str) -> None:
    name = method.rpartition("/")[2]
    grant = decide(POLICY_RULES, Identity(Role.HOST, "host1"), method, policy_pb2.CheckTableRequest()).grant
    assert (grant is not None) == name.startswith(("Get", "List", "Watch", "Select", "Check"))


@given(identities)
def test_open_services_and_servers_without_client_certificates(identity: Identity) -> None:
    assert decide(POLICY_RULES, identity, "/grpc.health.v1.Health/Check", None).grant is Grant.ALLOW
    assert decide(POLICY_RULES, LOCAL, f"/{POLICY_SERVICE.full_name}/CreateProviderAddress", None).grant
    # A method without a rule is nobody's, an admin's included: a rule forgotten fails closed.
    assert decide({}, identity, "/x.Y/Z", None).grant is None


@given(names, roles)
def test_an_agent_api_is_its_own_host_s_and_the_admin_s(name: str, role: Role) -> None:
    rules = vswitch_rules("host1")
    service = vswitch_pb2.DESCRIPTOR.services_by_name["VswitchService"].full_name
    for method in ("AttachPort", "ConfigureExtension", "ListPorts"):
        grant = decide(
            rules, Identity(role, name), f"/{service}/{method}", vswitch_pb2.AttachPortRequest()
        ).grant
        allowed = role is Role.ADMIN or (role is Role.HOST and name == "host1")
        assert (grant is Grant.ALLOW) == allowed


def test_a_replica_site_is_an_admin_s_and_its_receiver_other_sites() -> None:
    manage = "/overland.v1.ReplicaService/EnableReplication"
    receive = "/overland.v1.ReplicaReceiverService/SendDelta"
    unnamed = identity_from((), b"CN=site-a")
    for identity, may_manage, may_send in (
        (Identity(Role.ADMIN, "op"), True, True),
        (Identity(Role.SITE, "site-a"), False, True),
        (unnamed, False, True),
        (Identity(Role.TENANT, "site-a"), False, False),
        (Identity(Role.HOST, "h"), False, False),
        (ANONYMOUS, False, False),
    ):
        assert (decide(REPLICA_RULES, identity, manage, None).grant is not None) == may_manage
        assert (decide(REPLICA_RULES, identity, receive, None).grant is not None) == may_send


def test_every_rpc_needs_a_rule() -> None:
    with pytest.raises(ValueError, match="no rule for"):
        service_rules(POLICY_SERVICE, {"GetHost": Rule({Role.ADMIN: Grant.ALLOW})})
