"""The vswitch datapath: pure forwarding decisions, the extension chain and the TAP/raw-GRE shell."""

from services.vswitch.datapath.config import DatapathConfig
from services.vswitch.datapath.counters import Stats
from services.vswitch.datapath.errors import (
    DatapathConfigError,
    DatapathError,
    ExtensionError,
    PortError,
    PortNotFound,
    TableChangingError,
)
from services.vswitch.datapath.extensions import (
    CaptureExtension,
    ExtensionChain,
    FilterExtension,
    ForwardExtension,
    FrameMatch,
    Hook,
    HookResult,
    SwitchExtension,
    Verdict,
    build_extension,
    run_hooks,
)
from services.vswitch.datapath.forwarding import (
    Action,
    ActionKind,
    Context,
    PortInfo,
    ReplyKind,
    apply_rewrite,
    decide_from_port,
    decide_from_wire,
    inner_mtu_of,
    port_info,
)
from services.vswitch.datapath.switch import NvgreSwitch, policy_port_name

__all__ = [
    "Action",
    "ActionKind",
    "CaptureExtension",
    "Context",
    "DatapathConfig",
    "DatapathConfigError",
    "DatapathError",
    "ExtensionChain",
    "ExtensionError",
    "FilterExtension",
    "ForwardExtension",
    "FrameMatch",
    "Hook",
    "HookResult",
    "NvgreSwitch",
    "PortError",
    "PortInfo",
    "PortNotFound",
    "ReplyKind",
    "Stats",
    "SwitchExtension",
    "TableChangingError",
    "Verdict",
    "apply_rewrite",
    "build_extension",
    "decide_from_port",
    "decide_from_wire",
    "inner_mtu_of",
    "policy_port_name",
    "port_info",
    "run_hooks",
]
