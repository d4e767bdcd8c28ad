"""The Overland policy service: owner of the network virtualization routing table in etcd."""

from services.common.schema import CorruptEntry
from services.policy.config import PolicyConfig, load_config
from services.policy.errors import (
    InvalidPolicy,
    PolicyConflict,
    PolicyError,
    ResourceExists,
    ResourceNotFound,
    StaleRevision,
)
from services.policy.hosts import HostRegistry
from services.policy.listing import ListPage, TableListing
from services.policy.process import main, serve
from services.policy.record_apply import ApplyResult, RecordApply, RecordTxns
from services.policy.record_move import RecordMover, plan_move, validate_moves
from services.policy.record_planner import Mode, RecordChange, TableState, TxnPlan, plan_transaction
from services.policy.server import PolicyServer, create_server
from services.policy.service import GRPC_SERVICE, PolicyServicer, bulk_changes
from services.policy.store import PolicyStore
from services.policy.txns import TableTxns

__all__ = [
    "GRPC_SERVICE",
    "ApplyResult",
    "CorruptEntry",
    "HostRegistry",
    "InvalidPolicy",
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
    "RecordMover",
    "RecordTxns",
    "ResourceExists",
    "ResourceNotFound",
    "StaleRevision",
    "TableListing",
    "TableState",
    "TableTxns",
    "TxnPlan",
    "bulk_changes",
    "create_server",
    "load_config",
    "main",
    "plan_move",
    "plan_transaction",
    "serve",
    "validate_moves",
]
