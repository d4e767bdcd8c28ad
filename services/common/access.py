"""Authorization: which identity may call which RPC (docs/security.md, "Roles").

Each service states an ``AccessRules``: for every RPC of its services a ``Rule`` that grants roles
``Grant.ALLOW`` (the call as asked) or ``Grant.OWN`` (the call limited to what the identity owns,
which only the service can tell from its stored objects: the policy store's tenant filter), with
conditions a request alone decides (a tenant creates routing domains of its own name only).

``decide`` is the pure decision over an identity, a method and its request. ``Authorization`` is
its one shell per server: an interceptor between the error mapping and the stream slots (so a refusal
is a mapped ``PERMISSION_DENIED``, tracing sees it, and a refused stream takes no slot) that reads
the caller's identity (``services.common.identity``), decides, and runs the call with its ``Caller``
(``current_caller``) for the service's own filter. A refusal names the caller's identity and the
method, never anything stored.

Health and reflection are open to every caller the TLS layer admitted. A server that verifies no
client certificate (no TLS, or TLS without ``--tls-client-ca``) knows nothing of its callers: each is
a local admin (without TLS, such a server listens on loopback only).
"""

from __future__ import annotations

import contextvars
import enum
import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf.descriptor import ServiceDescriptor

from services.common.config import ServerConfig
from services.common.errors import PermissionDenied, ServiceError
from services.common.identity import ANONYMOUS, LOCAL, Identity, Role, identity_of
from services.common.server import BehaviorInterceptor

log = logging.getLogger(__name__)

# Services every admitted caller may call: load balancers and operators probe health, grpcurl
# reads the API's shape; neither reaches any stored object.
OPEN_SERVICES = frozenset(
    {
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
        "grpc.reflection.v1.ServerReflection",
    }
)


class Grant(enum.Enum):
    """How a rule lets a role call."""

    # The call as asked.
    ALLOW = "allow"
    # The call limited to the identity's own objects: the service filters (and answers NOT_FOUND
    # for the others, as for what does not exist).
    OWN = "own"


# A condition on a request alone: why the identity may not make it, or "" when it may.
Condition = Callable[[Identity, Any], str]


@dataclass(frozen=True)
class Rule:
    """Who may call one RPC: ``grants`` by role (a role not named is refused) and, by role,
    ``conditions`` on the request (for RPCs whose request is one message). ``unnamed``: the grant of a
    verified certificate that names no Overland identity (None: refused), for a service whose own
    check decides who its callers are (the DR site's allow-list of primaries by CN)."""

    grants: Mapping[Role, Grant]
    conditions: Mapping[Role, Condition] = field(default_factory=dict)
    unnamed: Grant | None = None


@dataclass(frozen=True)
class Decision:
    """A call's fate: its grant, or None and the message of its refusal."""

    grant: Grant | None
    message: str = ""


def method_name(method: str) -> str:
    """``CreateRoutingDomain`` of ``/overland.v1.PolicyService/CreateRoutingDomain``."""
    return method.rpartition("/")[2]


def is_open(method: str) -> bool:
    return method.lstrip("/").rpartition("/")[0] in OPEN_SERVICES


def service_rules(service: ServiceDescriptor, rules: Mapping[str, Rule]) -> dict[str, Rule]:
    """``rules`` (by method name) keyed by full method name, checked against ``service``: every RPC
    has a rule and every rule an RPC, and a client-streaming RPC (whose request the decision never
    sees) has no conditions. Raises ``ValueError`` otherwise, at import: an RPC added without a rule
    would otherwise be refused to everyone."""
    methods = {method.name: method for method in service.methods}
    missing = sorted(set(methods) - set(rules))
    unknown = sorted(set(rules) - set(methods))
    if missing or unknown:
        raise ValueError(f"{service.full_name} access rules: no rule for {missing}, no RPC for {unknown}")
    for name, rule in rules.items():
        if rule.conditions and methods[name].client_streaming:
            raise ValueError(f"{service.full_name}/{name} streams its requests: a condition never sees them")
    return {f"/{service.full_name}/{name}": rule for name, rule in rules.items()}


def _granted_to(rule: Rule) -> str:
    roles = [role.value for role in Role if role in rule.grants]
    return " and ".join(roles) + " identities" if roles else "no identity"


def decide(rules: Mapping[str, Rule], identity: Identity, method: str, request: Any) -> Decision:
    """Whether ``identity`` may call ``method`` (a full method name) with ``request`` (None when the
    request is a stream), and with which grant. Pure."""
    if is_open(method) or identity.local:
        return Decision(Grant.ALLOW)
    name = method_name(method)
    rule = rules.get(method)
    if rule is None:
        return Decision(None, f"{identity} may not call {name}: this server has no access rule for it")
    if identity.role is None:
        if rule.unnamed is not None and identity != ANONYMOUS:
            return Decision(rule.unnamed)
        return Decision(None, f"{identity} may not call {name}: it is for {_granted_to(rule)}")
    grant = rule.grants.get(identity.role)
    if grant is None:
        return Decision(None, f"{identity} may not call {name}: it is for {_granted_to(rule)}")
    condition = rule.conditions.get(identity.role)
    if condition is not None and request is not None:
        reason = condition(identity, request)
        if reason:
            return Decision(None, f"{identity} may not call {name} so: {reason}")
    return Decision(grant)


@dataclass(frozen=True)
class Caller:
    """Who a running call is for, and how far its grant goes."""

    identity: Identity
    grant: Grant

    @property
    def tenant(self) -> str | None:
        """The tenant whose objects alone the call may reach; None when it is not so limited."""
        if self.grant is Grant.OWN and self.identity.role is Role.TENANT:
            return self.identity.name
        return None


_CALLER: contextvars.ContextVar[Caller | None] = contextvars.ContextVar("overland_caller", default=None)


def current_caller() -> Caller:
    """The caller of the call this thread runs (set by ``Authorization``)."""
    caller = _CALLER.get()
    if caller is None:
        # A servicer reached without its server's authorization: refuse rather than guess.
        raise ServiceError("this call was not authorized (the server runs without access rules)")
    return caller


class Authorization(BehaviorInterceptor):
    """Decides every call with ``rules``; ``mutual``: whether the server verifies client certificates
    (without that it knows no caller, and every caller is a local admin)."""

    def __init__(self, rules: Mapping[str, Rule], *, mutual: bool) -> None:
        self.rules = dict(rules)
        self.mutual = mutual

    @classmethod
    def of_server(cls, rules: Mapping[str, Rule], config: ServerConfig) -> Authorization:
        """The authorization of a server listening as ``config`` says: by role with mutual TLS."""
        mutual = config.tls is not None and config.tls.ca is not None
        if config.tls is not None and not mutual:
            log.warning(
                "TLS without --tls-client-ca: the server knows no caller's identity and serves every "
                "caller as an admin"
            )
        return cls(rules, mutual=mutual)

    def identity(self, context: grpc.ServicerContext) -> Identity:
        return identity_of(context.auth_context()) if self.mutual else LOCAL

    def authorize(self, context: grpc.ServicerContext, method: str, request: Any) -> Caller:
        """The call's caller, or ``PermissionDenied``."""
        identity = self.identity(context)
        decision = decide(self.rules, identity, method, request)
        if decision.grant is None:
            log.warning("call refused", extra={"method": method, "identity": str(identity)})
            raise PermissionDenied(decision.message)
        return Caller(identity, decision.grant)

    def wrap(self, behavior: Callable[..., Any], kind: str, method: str) -> Callable[..., Any] | None:
        if is_open(method):
            return None
        one_request = kind.startswith("unary_")
        if kind.endswith("_unary"):

            def unary(request: Any, context: grpc.ServicerContext) -> Any:
                caller = self.authorize(context, method, request if one_request else None)
                token = _CALLER.set(caller)
                try:
                    return behavior(request, context)
                finally:
                    _CALLER.reset(token)

            return unary

        def stream(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            caller = self.authorize(context, method, request if one_request else None)
            # The stream runs in a context of its own, step by step: a generator's code runs in
            # whatever context calls next(), and gRPC may close it from another thread.
            own = contextvars.copy_context()
            own.run(_CALLER.set, caller)
            responses = own.run(behavior, request, context)
            try:
                while True:
                    try:
                        response = own.run(next, responses)
                    except StopIteration:
                        return
                    yield response
            finally:
                # A cancelled call closes this generator: close the inner one now (its slot is given
                # back in its ``finally``), not whenever it is collected.
                close = getattr(responses, "close", None)
                if close is not None:
                    own.run(close)

        return stream
