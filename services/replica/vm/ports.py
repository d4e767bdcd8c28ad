"""A VM's NICs as switch ports: each NIC is a persistent TAP device that qemu opens by name.

A port outlives the VM's runs (it is made when the VM first starts and removed with the VM), so a
restarted VM, or a restarted switch, finds its NIC where it was. Two kinds of switch:

* ``AgentPorts``: the host's vswitch agent (``--vswitch-endpoint``, over mutual TLS with the
  ``--vswitch-*`` files; a certificate or an identity it refuses is a ``PortFailed`` naming which)
  attaches a TAP_KERNEL port with the NIC's MAC and VSID: it makes the persistent TAP in its
  namespace, sits on the TAP's kernel side and forwards what qemu writes into the tenant network
  (docs/vswitch.md, "Port backends").
* ``LocalTaps`` (no agent): the site makes a plain TAP in qemu's namespace, connected to nothing but
  that namespace's kernel (Hyper-V's internal switch): for labs and tests.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from typing import Protocol

from overland.client import VswitchClient
from overland.config import ClientConfig, Endpoint, Service, TlsFiles
from overland.errors import (
    CertificateRefusedError,
    DeadlineExceededError,
    NotFoundError,
    PermissionDeniedError,
    UnavailableError,
)
from overland.errors import OverlandError as ClientError
from overland.v1 import vswitch_pb2
from services.common.errors import FailedPrecondition, Unavailable
from services.replica.vm.errors import VmError

IP_TIMEOUT = 30.0


class PortFailed(VmError, FailedPrecondition):
    """A NIC's port could not be made or removed (the message says why)."""


class SwitchUnavailable(VmError, Unavailable):
    """The host's vswitch agent did not answer."""


@dataclass(frozen=True)
class PortRequest:
    """One NIC's port: the TAP's name, the NIC's MAC and VSID, and its VM."""

    name: str
    mac: str
    vsid: int
    vm_name: str


class Ports(Protocol):
    """Where a site's VMs plug their NICs in."""

    def ensure(self, port: PortRequest) -> int:
        """Make the port unless it exists (idempotent: a VM's every start ensures its ports). Returns
        the MTU the VM's NIC should use (the switch's inner MTU), 0 when the switch does not say."""
        ...

    def remove(self, name: str) -> None:
        """Remove the port if it exists."""
        ...

    def close(self) -> None: ...


def _ip(netns: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    argv = ["ip", *(("-n", netns) if netns else ()), *args]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=IP_TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise PortFailed(f"{' '.join(argv)}: {error}") from error
    if check and done.returncode != 0:
        raise PortFailed(f"{' '.join(argv)}: {done.stderr.strip()}")
    return done


class LocalTaps:
    """Plain persistent TAPs in the network namespace ``netns`` ("": the process's own)."""

    def __init__(self, netns: str = ""):
        self.netns = netns

    def exists(self, name: str) -> bool:
        return _ip(self.netns, "link", "show", "dev", name, check=False).returncode == 0

    def ensure(self, port: PortRequest) -> int:
        if not self.exists(port.name):
            _ip(self.netns, "tuntap", "add", "dev", port.name, "mode", "tap")
        _ip(self.netns, "link", "set", "dev", port.name, "up")
        # No overlay: the guest keeps its default MTU.
        return 0

    def remove(self, name: str) -> None:
        if self.exists(name):
            _ip(self.netns, "link", "del", "dev", name)

    def close(self) -> None:
        """Nothing to let go of."""


class AgentPorts:
    """Ports of the host's vswitch agent at ``endpoint``: the agent makes each TAP and attaches to
    its kernel side; qemu opens it by name (so qemu runs in the agent's network namespace)."""

    def __init__(self, endpoint: str, tls: TlsFiles | None = None):
        self.endpoint = endpoint
        # The service's own settings (--vswitch-ca/-cert/-key), not a CLI user's OVERLAND_* environment.
        config = ClientConfig(endpoints={Service.VSWITCH: Endpoint(endpoint, tls)})
        self._client = VswitchClient(config=config)

    def _failed(self, error: ClientError, what: str) -> VmError:
        # Checked first: the SDK tells a refused certificate from an outage (both look UNAVAILABLE).
        if isinstance(error, CertificateRefusedError):
            return PortFailed(
                f"the vswitch agent at {self.endpoint} refused this site's certificate ({what}): {error} "
                "(--vswitch-ca/--vswitch-cert/--vswitch-key)"
            )
        if isinstance(error, UnavailableError | DeadlineExceededError):
            return SwitchUnavailable(f"the vswitch agent at {self.endpoint} did not answer ({what}): {error}")
        if isinstance(error, PermissionDeniedError):
            return PortFailed(
                f"the vswitch agent at {self.endpoint} refused this site's identity ({what}): {error} "
                "(--vswitch-cert must name this host, overland://host/NAME with the agent's --host-name, "
                "or an admin: docs/security.md)"
            )
        return PortFailed(f"the vswitch agent at {self.endpoint} refused to {what}: {error}")

    def ensure(self, port: PortRequest) -> int:
        try:
            existing = next((p for p in self._client.list_ports() if p.name == port.name), None)
            if existing is None:
                attached = self._client.attach_port(
                    name=port.name,
                    mac=port.mac,
                    vsid=port.vsid,
                    vm_name=port.vm_name,
                    backend=vswitch_pb2.PORT_BACKEND_TAP_KERNEL,
                )
                return int(attached.mtu)
        except ClientError as error:
            raise self._failed(error, f"attach port {port.name}") from None
        # Made by an earlier start (ports outlive the VM's runs, and the agent's restarts): it must
        # still be this NIC's.
        if (existing.mac.lower(), existing.vsid, existing.backend) != (
            port.mac,
            port.vsid,
            vswitch_pb2.PORT_BACKEND_TAP_KERNEL,
        ):
            raise PortFailed(
                f"port {port.name} of the agent at {self.endpoint} is not this NIC's "
                f"(MAC {existing.mac}, VSID {existing.vsid}): detach it first"
            )
        return int(existing.mtu)

    def remove(self, name: str) -> None:
        try:
            self._client.detach_port(name=name)
        except NotFoundError:
            return
        except ClientError as error:
            raise self._failed(error, f"detach port {name}") from None

    def close(self) -> None:
        self._client.close()


def site_ports(vswitch_endpoint: str, netns: str, tls: TlsFiles | None = None) -> Ports:
    """The agent's ports (reached with ``tls``), or without an agent (empty endpoint) plain TAPs in
    ``netns``."""
    return AgentPorts(vswitch_endpoint, tls) if vswitch_endpoint else LocalTaps(netns)
