"""The Overland policy service: owner of the network virtualization routing table in etcd."""

from services.common.schema import CorruptEntry
from services.policy.config import InvalidPolicyConfig, PolicyConfig, load_config
from services.policy.errors import (
    InvalidPolicy,
    PolicyConflict,
    PolicyError,
    ResourceExists,
    ResourceNotFound,
    StaleRevision,
)
from services.policy.record_planner import Mode, RecordChange, TableState, TxnPlan, plan_transaction
from services.policy.server import PolicyServer, create_server, main, serve
from services.policy.service import SERVICE_NAME, PolicyServicer, bulk_changes
from services.policy.store import ApplyResult, ListPage, PolicyStore, RecordApply

__all__ = [
    "SERVICE_NAME",
    "ApplyResult",
    "CorruptEntry",
    "InvalidPolicy",
    "InvalidPolicyConfig",
    "ListPage",
    "Mode",
    "PolicyConfig",
    "PolicyConflict",
    "PolicyError",
    "PolicyServer",
    "PolicyServicer",
    "PolicyStore",
    "RecordApply",
    "RecordChange",
    "ResourceExists",
    "ResourceNotFound",
    "StaleRevision",
    "TableState",
    "TxnPlan",
    "bulk_changes",
    "create_server",
    "load_config",
    "main",
    "plan_transaction",
    "serve",
]
