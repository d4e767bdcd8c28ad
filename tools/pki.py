"""Issue the certificates and etcd passwords an Overland deployment needs (docs/security.md).

A library for the tests and ``make run``, and a command line for operators:

    python -m tools.pki ca DIR                       # a CA: DIR/ca.crt, DIR/ca.key (0600)
    python -m tools.pki issue DIR NAME --cn CN [--dns NAME]... [--ip IP]... [--server] [--client]
                                                     # DIR/NAME.crt, DIR/NAME.key, signed by DIR's CA
    python -m tools.pki passwords DIR USER...        # DIR/USER: a random password each (0600)
    python -m tools.pki k8s DIR --node NODE...       # everything deploy/k8s mounts, one directory per Secret

Keys are ECDSA P-256, certificates valid for ``--days`` (365). Only ``make run``, the tests and an
operator's machine need it (``cryptography`` is a development dependency, not the services').
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from overland.config import TlsFiles
from services.common.etcd_auth import POLICY_USER, ROOT_USER, host_user, write_password, write_private
from services.common.identity import Role, identity_uri, name_problem

DAYS = 365
# The CN of the certificate services present to etcd (etcd requires one). etcd takes a certificate's
# CN as the user name of a call that brings no token, so this must never be an etcd user's name.
ETCD_CLIENT_CN = "overland-etcd-client"
NAMESPACE = "overland"
# The client certificate deploy/k8s's Prometheus scrapes the services' metrics endpoints with.
PROMETHEUS_CN = "overland-prometheus"
ETCD_MEMBERS = 3
# Where a node holds what only its own pods may have (deploy/k8s mounts these host paths): its
# agent's etcd password, and the certificate a replica site on the node attaches VM ports with (a
# host identity of that node, which the agent's rules allow on that node's agent only).
NODE_VSWITCH_DIR = "/etc/overland/vswitch"
NODE_REPLICA_DIR = "/etc/overland/replica"
SITE_AGENT_CERT = "vswitch-client"


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _key_bytes(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _window(days: int) -> tuple[datetime.datetime, datetime.datetime]:
    now = datetime.datetime.now(datetime.UTC)
    return now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=days)


@dataclass
class CertificateAuthority:
    """A CA on disk (``ca.crt``, ``ca.key``) that signs server and client certificates."""

    key: ec.EllipticCurvePrivateKey
    certificate: x509.Certificate
    path: Path

    @classmethod
    def create(cls, directory: Path, name: str = "Overland CA", days: int = DAYS) -> CertificateAuthority:
        key = ec.generate_private_key(ec.SECP256R1())
        start, end = _window(days)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(_name(name))
            .issuer_name(_name(name))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(key, hashes.SHA256())
        )
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / "ca.crt"
        path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
        write_private(directory / "ca.key", _key_bytes(key))
        return cls(key, certificate, path)

    @classmethod
    def load(cls, directory: Path) -> CertificateAuthority:
        key = serialization.load_pem_private_key((directory / "ca.key").read_bytes(), None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{directory / 'ca.key'} is not an EC key")
        path = directory / "ca.crt"
        return cls(key, x509.load_pem_x509_certificate(path.read_bytes()), path)

    def issue(
        self,
        directory: Path,
        stem: str,
        common_name: str,
        *,
        dns: Sequence[str] = (),
        ips: Sequence[str] = (),
        server: bool = False,
        client: bool = False,
        days: int = DAYS,
        identity: tuple[Role, str] | None = None,
    ) -> TlsFiles:
        """``directory/stem.crt`` and ``stem.key`` for ``common_name``: a server certificate for the
        ``dns`` names and ``ips``, a client certificate, or both. ``identity``: the role and name the
        certificate carries for the services' authorization (an ``overland://ROLE/NAME`` URI SAN,
        services/common/identity.py); a replica site's CN is its name for a DR site's allow-list.
        Returns the files with this CA as ``ca``: what a server or a client of this CA's world loads."""
        if not (server or client):
            raise ValueError("a certificate is for a server, a client, or both")
        key = ec.generate_private_key(ec.SECP256R1())
        start, end = _window(days)
        usages = [
            *([ExtendedKeyUsageOID.SERVER_AUTH] if server else []),
            *([ExtendedKeyUsageOID.CLIENT_AUTH] if client else []),
        ]
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name))
            .issuer_name(self.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        )
        names: list[x509.GeneralName] = [x509.DNSName(name) for name in dns]
        names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
        if identity is not None:
            names.append(x509.UniformResourceIdentifier(identity_uri(*identity)))
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        certificate = builder.sign(self.key, hashes.SHA256())
        directory.mkdir(parents=True, exist_ok=True)
        cert_path, key_path = directory / f"{stem}.crt", directory / f"{stem}.key"
        cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
        write_private(key_path, _key_bytes(key))
        return TlsFiles(ca=self.path, cert=cert_path, key=key_path)


LOCAL_NAMES = ("localhost",)
LOCAL_IPS = ("127.0.0.1",)


@dataclass(frozen=True)
class EtcdPki:
    """A local etcd's TLS: its server (and peer) certificate, and the client certificate services
    present to it; both carry the CA."""

    server: TlsFiles
    client: TlsFiles


def local_etcd_pki(directory: Path) -> EtcdPki:
    """A fresh CA and the certificates of an etcd on 127.0.0.1 and its clients (tests, ``make run``)."""
    ca = CertificateAuthority.create(directory, "Overland local etcd CA")
    server = ca.issue(directory, "etcd", "etcd", dns=LOCAL_NAMES, ips=LOCAL_IPS, server=True, client=True)
    client = ca.issue(directory, "etcd-client", ETCD_CLIENT_CN, client=True)
    return EtcdPki(server, client)


def kubernetes(directory: Path, nodes: Sequence[str], days: int = DAYS) -> list[str]:
    """Everything deploy/k8s mounts, one directory per Secret under ``directory`` (see
    docs/security.md), and the commands that create the Secrets and put each node's etcd password on
    the node."""
    ca = CertificateAuthority.create(directory / "ca", days=days)
    members = [f"etcd-{i}.etcd.{NAMESPACE}.svc" for i in range(ETCD_MEMBERS)]
    secrets: dict[str, Path] = {}

    def tls_secret(name: str, common_name: str, dns: Sequence[str], *, site: str = "") -> None:
        folder = directory / name
        ca.issue(
            folder,
            "tls",
            common_name,
            dns=[*dns, *LOCAL_NAMES],
            ips=LOCAL_IPS,
            server=True,
            client=True,
            days=days,
        )
        if site:
            ca.issue(folder, "client", site, client=True, days=days, identity=(Role.SITE, site))
        (folder / "ca.crt").write_bytes(ca.path.read_bytes())
        secrets[name] = folder

    def client_secret(name: str, common_name: str) -> None:
        folder = directory / name
        ca.issue(folder, "tls", common_name, client=True, days=days)
        (folder / "ca.crt").write_bytes(ca.path.read_bytes())
        secrets[name] = folder

    tls_secret("etcd-tls", "etcd", [*members, f"etcd.{NAMESPACE}.svc"])
    client_secret("etcd-client-tls", ETCD_CLIENT_CN)
    # Prometheus scrapes the services' metrics over mutual TLS, as any of their clients.
    client_secret("prometheus-scrape-tls", PROMETHEUS_CN)
    for service in ("policy", "vswitch"):
        tls_secret(f"{service}-tls", service, [service, f"{service}.{NAMESPACE}.svc"])
    for site in ("site-a", "site-b"):
        name = f"replica-{site}"
        tls_secret(f"{name}-tls", site, [name, f"{name}.{NAMESPACE}.svc"], site=site)
    # The operator's certificate (the CLI's OVERLAND_TLS_CERT/KEY): an admin.
    admin = directory / "admin-tls"
    ca.issue(admin, "tls", "admin", client=True, days=days, identity=(Role.ADMIN, "admin"))
    (admin / "ca.crt").write_bytes(ca.path.read_bytes())
    users = directory / "etcd-users"
    for user in (ROOT_USER, POLICY_USER, *(host_user(node) for node in nodes)):
        write_password(users, user)
    secrets["etcd-users"] = users
    commands = [
        f"kubectl -n {NAMESPACE} create secret generic {name} --from-file={path}"
        for name, path in sorted(secrets.items())
    ]
    for node in nodes:
        source = users / host_user(node)
        commands.append(f"# on node {node}: install -D -m 0600 {source} {NODE_VSWITCH_DIR}/etcd-password")
        # Not a Secret: every pod of a StatefulSet would mount every node's, wherever it runs.
        node_files = directory / "replica-nodes" / node
        ca.issue(node_files, SITE_AGENT_CERT, node, client=True, days=days, identity=(Role.HOST, node))
        for suffix in ("crt", "key"):
            target = f"{NODE_REPLICA_DIR}/{SITE_AGENT_CERT}.{suffix}"
            commands.append(
                f"# on node {node}: install -D -m 0600 {node_files}/{SITE_AGENT_CERT}.{suffix} {target}"
            )
    return commands


def _identity(text: str) -> tuple[Role, str]:
    role, slash, name = text.partition("/")
    try:
        parsed = Role(role)
    except ValueError:
        parsed = None
    problem = name_problem(name) if slash else "give ROLE/NAME"
    if parsed is None or problem:
        roles = ", ".join(r.value for r in Role)
        raise argparse.ArgumentTypeError(f"{text!r}: {problem or f'the role is one of {roles}'}")
    return parsed, name


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tools.pki", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    ca = commands.add_parser("ca", help="make a CA")
    ca.add_argument("directory", type=Path)
    ca.add_argument("--name", default="Overland CA")
    ca.add_argument("--days", type=int, default=DAYS)
    issue = commands.add_parser("issue", help="issue a certificate signed by DIR's CA")
    issue.add_argument("directory", type=Path)
    issue.add_argument("stem")
    issue.add_argument("--cn", required=True, help="common name: a client's identity")
    issue.add_argument("--dns", action="append", default=[], help="a server's DNS name (repeatable)")
    issue.add_argument("--ip", action="append", default=[], help="a server's IP address (repeatable)")
    issue.add_argument("--server", action="store_true")
    issue.add_argument("--client", action="store_true")
    issue.add_argument("--days", type=int, default=DAYS)
    issue.add_argument(
        "--identity",
        type=_identity,
        help="ROLE/NAME the services authorize (admin, tenant, host, site), e.g. tenant/contoso",
    )
    passwords = commands.add_parser("passwords", help="random etcd passwords, one file per user")
    passwords.add_argument("directory", type=Path)
    passwords.add_argument("users", nargs="+")
    k8s = commands.add_parser("k8s", help="the Secrets of deploy/k8s")
    k8s.add_argument("directory", type=Path)
    k8s.add_argument("--node", action="append", default=[], help="a node that runs an agent (repeatable)")
    k8s.add_argument("--days", type=int, default=DAYS)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    lines: list[str] = []
    if args.command == "ca":
        lines.append(str(CertificateAuthority.create(args.directory, args.name, args.days).path))
    elif args.command == "issue":
        if not (args.server or args.client):
            sys.stderr.write("python -m tools.pki issue: say --server, --client or both\n")
            return 2
        files = CertificateAuthority.load(args.directory).issue(
            args.directory,
            args.stem,
            args.cn,
            dns=args.dns,
            ips=args.ip,
            server=args.server,
            client=args.client,
            days=args.days,
            identity=args.identity,
        )
        lines += [str(files.cert), str(files.key)]
    elif args.command == "passwords":
        lines += [str(write_password(args.directory, user)[0]) for user in args.users]
    else:
        lines += kubernetes(args.directory, args.node, args.days)
    sys.stdout.write("".join(f"{line}\n" for line in lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
