"""The NBD server: a thin threaded socket shell around ``services.replica.nbd.protocol``.

Each connection has one thread that reads requests in order and a shared worker pool that executes
them, so several requests of one client are in flight at once (writes then share the tracking log's
fsync). Replies may leave out of order, as the protocol allows; a lock keeps each reply whole.
"""

from __future__ import annotations

import errno
import logging
import socket
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from services.common.errors import InvalidArgument, ResourceExhausted, ServiceError
from services.replica.nbd.protocol import (
    CMD_DISC,
    CMD_FLAG_FUA,
    CMD_FLUSH,
    CMD_READ,
    CMD_TRIM,
    CMD_WRITE,
    CMD_WRITE_ZEROES,
    EINVAL,
    EIO,
    ENOSPC,
    EPERM,
    MAX_REQUEST,
    REQUEST,
    ExportInfo,
    NbdProtocolError,
    Request,
    check_request,
    negotiate,
    parse_request,
    request_payload,
    simple_reply,
)
from services.replica.vhd import BlockDevice, Buffer, DeviceReadOnly

log = logging.getLogger(__name__)

HANDSHAKE_TIMEOUT = 30.0
ACCEPT_POLL = 0.2
MAX_IN_FLIGHT = 16


class ClientGone(ConnectionError):
    """The client closed the connection."""


def recv_exact(sock: socket.socket, length: int) -> bytearray:
    """Exactly ``length`` bytes from the socket, or ``ClientGone``."""
    buffer = bytearray(length)
    view = memoryview(buffer)
    while view:
        received = sock.recv_into(view)
        if not received:
            raise ClientGone("the client closed the connection")
        view = view[received:]
    return buffer


@dataclass
class Export:
    """A named device served over NBD."""

    device: BlockDevice
    read_only: bool

    @property
    def info(self) -> ExportInfo:
        return ExportInfo(self.device.virtual_size, self.read_only)


def error_number(error: BaseException) -> int:
    """The NBD errno for a failed request."""
    if isinstance(error, DeviceReadOnly):
        return EPERM
    if isinstance(error, ResourceExhausted) or (isinstance(error, OSError) and error.errno == errno.ENOSPC):
        return ENOSPC
    if isinstance(error, ServiceError):
        return EINVAL
    return EIO


def execute(request: Request, payload: Buffer, device: BlockDevice) -> bytes:
    """Carry out one checked request on a device; the data a read returns, else empty bytes."""
    if request.command == CMD_READ:
        return device.read(request.offset, request.length)
    if request.command == CMD_WRITE:
        device.write(request.offset, payload)
    elif request.command in (CMD_TRIM, CMD_WRITE_ZEROES):
        # A trimmed range reads as zeros afterwards, so the replica stays byte-identical to the primary.
        device.write_zeroes(request.offset, request.length)
    elif request.command == CMD_FLUSH:
        device.flush()
    if request.flags & CMD_FLAG_FUA:
        device.flush()
    return b""


class NbdServer:
    """Serves block devices over NBD on TCP (``host:port``, port 0 picks one) and optionally a unix socket."""

    def __init__(
        self, host: str = "127.0.0.1", port: int = 0, unix_path: Path | None = None, workers: int = 8
    ):
        if not 0 <= port <= 65535:
            raise InvalidArgument(f"NBD port {port} out of range")
        if workers < 1:
            raise InvalidArgument("NBD workers must be at least 1")
        self.host = host
        self.port = port
        self.unix_path = unix_path
        self._workers = workers
        self._exports: dict[str, Export] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._listeners: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._clients: set[socket.socket] = set()
        self._pool: ThreadPoolExecutor | None = None

    def add_export(self, name: str, device: BlockDevice, read_only: bool = False) -> None:
        """Serve ``device`` as ``name``. To have every change logged before it is acknowledged, serve a
        ``TrackedDevice`` (the primary's tracking wraps the disk; the server knows only ``BlockDevice``).
        """
        if not name or len(name.encode()) > 4096:
            raise InvalidArgument("export name must be 1 to 4096 bytes of UTF-8")
        with self._lock:
            if name in self._exports:
                raise InvalidArgument(f"export {name!r} already exists")
            self._exports[name] = Export(device, read_only)

    def remove_export(self, name: str) -> BlockDevice:
        """Stop offering an export to new clients; the caller closes the returned device."""
        with self._lock:
            export = self._exports.pop(name, None)
        if export is None:
            raise InvalidArgument(f"no export named {name!r}")
        return export.device

    def exports(self) -> dict[str, ExportInfo]:
        with self._lock:
            return {name: export.info for name, export in self._exports.items()}

    def start(self) -> int:
        """Bind and start accepting; returns the TCP port."""
        self._pool = ThreadPoolExecutor(max_workers=self._workers, thread_name_prefix="nbd")
        tcp = socket.create_server((self.host, self.port))
        self.port = tcp.getsockname()[1]
        self._listeners.append(tcp)
        if self.unix_path is not None:
            self.unix_path.unlink(missing_ok=True)
            unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            unix.bind(str(self.unix_path))
            unix.listen()
            self._listeners.append(unix)
        for listener in self._listeners:
            listener.settimeout(ACCEPT_POLL)
            self._spawn(self._accept_loop, listener)
        return self.port

    def stop(self) -> None:
        """Stop accepting, disconnect clients, wait for the threads. Exports are left to their owner."""
        self._stop.set()
        with self._lock:
            clients = list(self._clients)
        for client in clients:
            try:
                client.shutdown(socket.SHUT_RDWR)
            except OSError:
                log.debug("client socket already closed")
        with self._lock:
            threads = list(self._threads)
        for thread in threads:
            thread.join(timeout=10)
        for listener in self._listeners:
            listener.close()
        if self.unix_path is not None:
            self.unix_path.unlink(missing_ok=True)
        if self._pool is not None:
            self._pool.shutdown(wait=True)

    def _spawn(self, target: Callable[..., None], *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        with self._lock:
            self._threads = [t for t in self._threads if t.is_alive()]
            self._threads.append(thread)
        thread.start()

    def _accept_loop(self, listener: socket.socket) -> None:
        while not self._stop.is_set():
            try:
                client, _address = listener.accept()
            except TimeoutError:
                continue
            except OSError as error:
                if self._stop.is_set():
                    return
                # Out of descriptors or an aborted handshake: this client is lost, the server is not.
                log.error("NBD accept failed", extra={"error": str(error)})
                self._stop.wait(ACCEPT_POLL)
                continue
            self._spawn(self._serve, client)

    def _serve(self, client: socket.socket) -> None:
        with self._lock:
            self._clients.add(client)
        try:
            client.settimeout(HANDSHAKE_TIMEOUT)
            if client.family != socket.AF_UNIX:
                client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            negotiated = negotiate(lambda n: bytes(recv_exact(client, n)), client.sendall, self.exports)
            if negotiated is None:
                return
            with self._lock:
                export = self._exports.get(negotiated.export)
            if export is None:
                return
            client.settimeout(None)
            self._transmit(client, export)
        except (NbdProtocolError, OSError) as error:
            # A broken or vanished client only ends its own connection.
            log.info("NBD connection closed", extra={"reason": str(error)})
        finally:
            with self._lock:
                self._clients.discard(client)
            client.close()

    def _transmit(self, client: socket.socket, export: Export) -> None:
        assert self._pool is not None
        send_lock = threading.Lock()
        slots = threading.BoundedSemaphore(MAX_IN_FLIGHT)
        info = export.info

        def reply(request: Request, payload: bytearray) -> None:
            try:
                data = execute(request, payload, export.device)
                header = simple_reply(request.handle)
            except Exception as error:  # any failure must become an NBD errno reply
                if not isinstance(error, ServiceError | OSError):
                    log.exception("NBD request failed unexpectedly")
                data, header = b"", simple_reply(request.handle, error_number(error))
            try:
                with send_lock:
                    client.sendmsg([header, data] if data else [header])
            except OSError:
                log.debug("NBD client went away before its reply")
            finally:
                slots.release()

        try:
            while not self._stop.is_set():
                request = parse_request(bytes(recv_exact(client, REQUEST.size)))
                if request.command == CMD_WRITE and request.length > MAX_REQUEST:
                    raise NbdProtocolError(f"write of {request.length} bytes exceeds {MAX_REQUEST}")
                payload = recv_exact(client, request_payload(request))
                if request.command == CMD_DISC:
                    break
                refused = check_request(request, info)
                if refused:
                    with send_lock:
                        client.sendall(simple_reply(request.handle, refused))
                    continue
                slots.acquire()
                self._pool.submit(reply, request, payload)
        finally:
            # Requests already read complete (and are acknowledged if the client is still there).
            for _ in range(MAX_IN_FLIGHT):
                slots.acquire()
