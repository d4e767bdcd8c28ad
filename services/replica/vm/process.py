"""The thin shell around one VM's qemu process: start, graceful and hard stop, status, console log.

A VM lives in a work folder of its own: ``console.log`` (the serial console, appended across starts),
``qmp.sock`` (the control socket) and ``qemu.log`` (qemu's own messages). A graceful stop presses the
ACPI power button through QMP and waits for the guest to power off; a hard stop asks qemu to quit
(the guest gets no say, as when the power is pulled) and kills it if it does not; ``kill`` is
``kill -9`` straight away (a crashed host).

qemu runs in a session of its own, so it outlives the process that started it: a restarted site
``adopt``s it by its ``ProcessIdentity`` (the process id and start time, which a reused id does not
have) and talks to it through its QMP socket again. An adopted qemu is not this process's child, so
its exit code cannot be known: the methods that return one return None for it.
"""

from __future__ import annotations

import contextlib
import enum
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from services.replica.vm.errors import QemuFailed, VmAlreadyRunning, VmNotRunning, VmTimeout
from services.replica.vm.qemu import QEMU_BINARY, Accel, VmSpec, qemu_command
from services.replica.vm.qmp import QmpClient

START_TIMEOUT = 30.0
HARD_STOP_TIMEOUT = 10.0
POWER_BUTTON_INTERVAL = 5.0
POLL_SECONDS = 0.05
CONSOLE_POLL_SECONDS = 0.2
LOG_TAIL = 4000
# States of /proc/PID/stat that are not a live process: a zombie, a dead one.
GONE_STATES = ("Z", "X", "x")


@dataclass(frozen=True)
class ProcessIdentity:
    """One process: its id and its start time in clock ticks since boot (/proc/PID/stat field 22),
    so that another process that got the same id later is not taken for it."""

    pid: int
    start_ticks: int


def parse_stat(text: str) -> tuple[str, int]:
    """The state letter and start time of a /proc/PID/stat line (the command name, in parentheses,
    may hold blanks and parentheses itself)."""
    fields = text[text.rindex(")") + 2 :].split()
    return fields[0], int(fields[19])


def identity_of(pid: int) -> ProcessIdentity | None:
    """The identity of the live process ``pid``, or None if there is none (or only a zombie)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    state, start = parse_stat(text)
    return None if state in GONE_STATES else ProcessIdentity(pid, start)


class VmState(enum.Enum):
    """Where a VM's qemu is: not running, running the guest, or paused (QMP ``stop``)."""

    STOPPED = "stopped"
    RUNNING = "running"
    PAUSED = "paused"


@dataclass(frozen=True)
class VmStatus:
    state: VmState
    pid: int | None = None
    # qemu's exit code once it has exited (None while it runs or before the first start).
    exit_code: int | None = None
    # QMP query-status while it runs: "running", "paused", "shutdown"...
    qemu_status: str = ""


def netns_prefix(netns: str | None) -> list[str]:
    """Run in ``netns`` (``ip netns exec`` execs, so the process id stays qemu's)."""
    return ["ip", "netns", "exec", netns] if netns else []


class VmProcess:
    """One VM's qemu, started and stopped any number of times. Not thread-safe."""

    def __init__(
        self,
        spec: VmSpec,
        workdir: Path,
        accel: Accel,
        *,
        netns: str | None = None,
        qemu: str = QEMU_BINARY,
    ):
        self.spec = spec
        self.workdir = workdir
        self.accel = accel
        self.netns = netns
        self.qemu = qemu
        self.console_log = workdir / "console.log"
        self.qmp_socket = workdir / "qmp.sock"
        self.qemu_log = workdir / "qemu.log"
        self._process: subprocess.Popen[bytes] | None = None
        # A qemu another process started (this site before a restart): not our child.
        self._adopted: ProcessIdentity | None = None
        self._qmp: QmpClient | None = None
        self._console_start = 0

    @classmethod
    def adopt(
        cls,
        spec: VmSpec,
        workdir: Path,
        accel: Accel,
        identity: ProcessIdentity,
        *,
        netns: str | None = None,
        qemu: str = QEMU_BINARY,
    ) -> VmProcess | None:
        """The VM whose qemu ``identity`` still runs (QMP connects when first needed), or None if it
        is gone."""
        if identity_of(identity.pid) != identity:
            return None
        vm = cls(spec, workdir, accel, netns=netns, qemu=qemu)
        vm._adopted = identity
        vm._console_start = vm.console_log.stat().st_size if vm.console_log.exists() else 0
        return vm

    @property
    def pid(self) -> int | None:
        if self._adopted is not None:
            return self._adopted.pid
        return self._process.pid if self._process is not None else None

    def identity(self) -> ProcessIdentity | None:
        """The running qemu's identity (for a pid file a restarted site adopts it by)."""
        pid = self.pid
        return identity_of(pid) if pid is not None and self.is_running() else None

    def is_running(self) -> bool:
        if self._adopted is not None:
            return identity_of(self._adopted.pid) == self._adopted
        return self._process is not None and self._process.poll() is None

    def start(self, timeout: float = START_TIMEOUT) -> None:
        """Start qemu and connect to its QMP socket; a qemu that exits while starting raises
        ``QemuFailed`` with its messages."""
        if self.is_running():
            raise VmAlreadyRunning(f"VM {self.spec.name} is already running (pid {self.pid})")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.qmp_socket.unlink(missing_ok=True)
        self._adopted = None
        self._console_start = self.console_log.stat().st_size if self.console_log.exists() else 0
        argv = [
            *netns_prefix(self.netns),
            *qemu_command(self.spec, self.accel, self.console_log, self.qmp_socket, self.qemu),
        ]
        with self.qemu_log.open("ab") as log:
            try:
                self._process = subprocess.Popen(
                    argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
                )
            except OSError as error:
                raise QemuFailed(f"cannot run {argv[0]}: {error}") from error
        deadline = time.monotonic() + timeout
        while True:
            if not self.is_running():
                raise QemuFailed(f"qemu exited while starting VM {self.spec.name}: {self.qemu_messages()}")
            if self.qmp_socket.exists():
                with contextlib.suppress(QemuFailed):
                    self._qmp = QmpClient.connect(self.qmp_socket)
                    return
            if time.monotonic() > deadline:
                self._kill()
                raise QemuFailed(f"qemu of VM {self.spec.name} did not open QMP in {timeout:.0f} s")
            time.sleep(POLL_SECONDS)

    def qmp(self) -> QmpClient:
        if not self.is_running():
            raise VmNotRunning(f"VM {self.spec.name} is not running")
        if self._qmp is None:
            # An adopted qemu: its socket takes a new client once the old one (a dead site) is gone.
            self._qmp = QmpClient.connect(self.qmp_socket)
        return self._qmp

    def status(self) -> VmStatus:
        if not self.is_running():
            return VmStatus(VmState.STOPPED, exit_code=self.exit_code)
        answer = self.qmp().execute("query-status")
        state = VmState.RUNNING if answer.get("running") else VmState.PAUSED
        return VmStatus(state, pid=self.pid, qemu_status=str(answer.get("status", "")))

    @property
    def exit_code(self) -> int | None:
        """qemu's exit code once it exited; None while it runs, before the first start, or adopted."""
        if self._adopted is not None or self._process is None:
            return None
        return self._process.poll()

    def wait(self, timeout: float) -> bool:
        """Whether qemu exited within ``timeout`` seconds (``exit_code`` then says how)."""
        if self._adopted is not None:
            deadline = time.monotonic() + timeout
            while self.is_running():
                if time.monotonic() >= deadline:
                    return False
                time.sleep(POLL_SECONDS)
        elif self._process is None:
            return True
        else:
            try:
                self._process.wait(timeout)
            except subprocess.TimeoutExpired:
                return False
        self._close_qmp()
        return True

    def stop(self, timeout: float) -> int | None:
        """Graceful stop: press the ACPI power button and wait up to ``timeout`` for the guest to
        power off.

        The button is pressed again every ``POWER_BUTTON_INTERVAL`` seconds: a press the guest gets
        before its ACPI daemon runs (early in a boot) is lost, as on a real machine. Returns qemu's
        exit code. A guest that ignores the button raises ``VmTimeout`` and keeps running (the caller
        may then ``hard_stop``)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.qmp().execute("system_powerdown")
            except (VmNotRunning, QemuFailed):
                # qemu may have powered off between two presses.
                if not self.wait(HARD_STOP_TIMEOUT):
                    raise
                return self.exit_code
            if self.wait(max(0.0, min(POWER_BUTTON_INTERVAL, deadline - time.monotonic()))):
                return self.exit_code
            if time.monotonic() >= deadline:
                raise VmTimeout(
                    f"VM {self.spec.name} did not power off within {timeout:.0f} s of ACPI powerdown"
                )

    def hard_stop(self, timeout: float = HARD_STOP_TIMEOUT) -> int | None:
        """Turn the VM off without asking the guest: QMP ``quit``, then SIGKILL if qemu lingers."""
        if not self.is_running():
            return self._exit_code()
        with contextlib.suppress(QemuFailed, VmNotRunning):
            # qemu may close the socket before its answer arrives: it is quitting either way.
            self.qmp().execute("quit")
        return self.exit_code if self.wait(timeout) else self._kill()

    def kill(self) -> int | None:
        """``kill -9`` of qemu: the guest and qemu stop at once, as in a host crash."""
        if not self.is_running():
            return self._exit_code()
        return self._kill()

    def _kill(self) -> int | None:
        pid = self.pid
        assert pid is not None
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        if not self.wait(HARD_STOP_TIMEOUT):
            raise QemuFailed(f"qemu of VM {self.spec.name} (pid {pid}) survived SIGKILL")
        return self.exit_code

    def _exit_code(self) -> int | None:
        if self._process is None and self._adopted is None:
            raise VmNotRunning(f"VM {self.spec.name} was never started")
        return self.exit_code

    def _close_qmp(self) -> None:
        if self._qmp is not None:
            self._qmp.close()
            self._qmp = None

    def console(self, offset: int = 0) -> tuple[str, int]:
        """The console log from byte ``offset`` on (every start's output), and the offset after it."""
        try:
            with self.console_log.open("rb") as log:
                log.seek(offset)
                data = log.read()
        except FileNotFoundError:
            return "", offset
        return data.decode(errors="replace"), offset + len(data)

    def console_since_start(self) -> str:
        """What the guest printed since the last ``start``."""
        return self.console(self._console_start)[0]

    def wait_for_console(self, text: str, timeout: float) -> str:
        """Wait until the console shows ``text`` since the last start; returns that console output.

        Raises ``VmNotRunning`` if qemu exits first and ``VmTimeout`` after ``timeout`` seconds, both
        with the console's tail."""
        deadline = time.monotonic() + timeout
        while True:
            output = self.console_since_start()
            if text in output:
                return output
            if not self.is_running():
                raise VmNotRunning(
                    f"VM {self.spec.name} exited before its console showed {text!r}: ...{output[-LOG_TAIL:]}"
                )
            if time.monotonic() > deadline:
                tail = output[-LOG_TAIL:]
                raise VmTimeout(
                    f"VM {self.spec.name} console has no {text!r} after {timeout:.0f} s: ...{tail}"
                )
            time.sleep(CONSOLE_POLL_SECONDS)

    def qemu_messages(self) -> str:
        try:
            return self.qemu_log.read_text(errors="replace")[-LOG_TAIL:].strip()
        except FileNotFoundError:
            return ""

    def close(self) -> None:
        """Turn the VM off if it runs (hard) and release the QMP connection."""
        if self.is_running():
            self.hard_stop()
        self._close_qmp()

    def release(self) -> None:
        """Let go of the VM without stopping it (its QMP connection closes): another process may
        ``adopt`` it."""
        self._close_qmp()

    def __enter__(self) -> VmProcess:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
