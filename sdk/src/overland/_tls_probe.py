"""Why a server refuses this client's certificate: a TLS handshake of its own, asked only after a call
failed UNAVAILABLE over mutual TLS.

gRPC reports a refused client certificate as a closed socket (under TLS 1.3 the server checks the
client's certificate after the client considers the handshake done), so the client could not tell it
from a server that is down and would retry it as one. This module repeats the handshake with the
standard library and speaks first: a server that accepted the certificate answers HTTP/2's preface;
one that refused it sends an alert (``unknown ca``, ``certificate expired``...), or, as gRPC's own
servers do, closes the connection at once.
"""

from __future__ import annotations

import socket
import ssl

from overland.config import Endpoint

# HTTP/2's client preface and an empty SETTINGS frame: a server that accepted the certificate answers
# them; one that refused it has sent its alert, which the read then raises.
_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"


def refused_certificate(endpoint: Endpoint, timeout: float = 3.0) -> str | None:
    """How the server of ``endpoint`` refuses its client certificate (its TLS alert, or that it
    closed the connection after the handshake), or None: no client certificate, a unix socket, a
    server that accepts it, or one that cannot be reached."""
    tls = endpoint.tls
    if tls is None or tls.cert is None or tls.key is None or endpoint.address.startswith("unix"):
        return None
    host, _sep, port = endpoint.address.rpartition(":")
    host = host.strip("[]")
    try:
        context = ssl.create_default_context(cafile=str(tls.ca) if tls.ca else None)
        context.load_cert_chain(str(tls.cert), str(tls.key))
        context.set_alpn_protocols(["h2"])
        with (
            socket.create_connection((host, int(port)), timeout=timeout) as raw,
            context.wrap_socket(raw, server_hostname=tls.server_name or host) as wrapped,
        ):
            wrapped.sendall(_PREFACE)
            if not wrapped.recv(1):
                return "the server closed the connection right after the TLS handshake"
    except ssl.SSLError as error:
        reason = error.reason or ""
        # An alert from the server about our certificate; not our refusal of the server's.
        if "ALERT" in reason and reason != "CERTIFICATE_VERIFY_FAILED":
            return "TLS alert: " + reason.lower().replace("_", " ")
    except (OSError, ValueError):
        pass
    return None
