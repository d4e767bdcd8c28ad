"""The container suite's TLS and etcd users, as a deployment has them (docs/security.md): one CA; etcd's
certificate (clients and peers, for every member's alias and the published 127.0.0.1 ports); the client
certificate services present to etcd; a certificate per service container (server and client, for its
alias and 127.0.0.1); a replica site's client certificate (CN its site name, role ``site``); and the
etcd password files.

Everything lives in one directory that every container mounts at the same path. The suite's own etcd
observers (python-etcd3) present a certificate whose CN is ``root``: etcd takes a certificate's CN as
the user of a call that brings no token, so they need no password (and no token to renew across
member restarts). The services and the suite's ``EtcdKV`` clients authenticate with passwords.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from overland.config import TlsFiles
from services.common.config import EtcdConfig, EtcdCredentials
from services.common.etcd_auth import POLICY_USER, ROOT_USER, host_user, read_passwords, write_password
from services.common.identity import Role
from tools.pki import ETCD_CLIENT_CN, CertificateAuthority

# The CN of the suite's own calls to the services (the services require client certificates).
SUITE_CLIENT_CN = "overland-test"


@dataclass
class SuiteSecurity:
    directory: Path
    ca: CertificateAuthority
    etcd_server: TlsFiles
    etcd_client: TlsFiles
    etcd_admin: TlsFiles
    suite_client: TlsFiles
    services: dict[str, TlsFiles] = field(default_factory=dict)

    @classmethod
    def create(cls, directory: Path, hosts: Sequence[str], etcd_members: int = 3) -> SuiteSecurity:
        """Certificates and passwords for an etcd cluster of ``etcd_members`` and agents on ``hosts``."""
        ca = CertificateAuthority.create(directory, "Overland container suite CA")
        members = [f"etcd-{i}" for i in range(etcd_members)]
        etcd_server = ca.issue(
            directory,
            "etcd",
            "etcd",
            dns=[*members, "localhost"],
            ips=["127.0.0.1"],
            server=True,
            client=True,
        )
        security = cls(
            directory,
            ca,
            etcd_server,
            ca.issue(directory, "etcd-client", ETCD_CLIENT_CN, client=True),
            ca.issue(directory, "etcd-admin", ROOT_USER, client=True),
            # The suite operates every service: an admin.
            ca.issue(
                directory,
                "suite-client",
                SUITE_CLIENT_CN,
                client=True,
                identity=(Role.ADMIN, SUITE_CLIENT_CN),
            ),
        )
        for user in (ROOT_USER, POLICY_USER, *(host_user(host) for host in hosts)):
            write_password(security.users, user)
        return security

    def passwords(self) -> dict[str, str]:
        return read_passwords(self.users)

    @property
    def users(self) -> Path:
        return self.directory / "etcd-users"

    def service(self, name: str) -> TlsFiles:
        """The certificate of the service container named ``name`` (its alias, and its CN)."""
        if name not in self.services:
            self.services[name] = self.ca.issue(
                self.directory,
                f"service-{name}",
                name,
                dns=[name, "localhost"],
                ips=["127.0.0.1"],
                server=True,
                client=True,
            )
        return self.services[name]

    def site_client(self, site: str) -> TlsFiles:
        """The client certificate a replica site presents to its DR site, as deployed (tools/pki.py
        k8s): its CN is the site's name, which the DR site's allow-list names, and it carries the
        ``site`` role the receiving side admits."""
        return self.ca.issue(
            self.directory, f"site-client-{site}", site, client=True, identity=(Role.SITE, site)
        )

    def server_flags(self, name: str) -> list[str]:
        """Mutual TLS for the service container ``name``."""
        tls = self.service(name)
        return ["--tls-cert", str(tls.cert), "--tls-key", str(tls.key), "--tls-client-ca", str(tls.ca)]

    def channel_credentials(self) -> grpc.ChannelCredentials:
        """The suite's client side of the services' mutual TLS."""
        return self.suite_client.credentials()

    def password_file(self, user: str) -> Path:
        return self.users / user

    def admin_credentials(self) -> grpc.ChannelCredentials:
        """TLS as etcd's root by certificate (CN root): the suite's python-etcd3 observers."""
        return self.etcd_admin.credentials()

    def etcd_flags(self, user: str) -> list[str]:
        """A service container's flags for etcd over TLS as ``user`` (the password by file)."""
        tls = self.etcd_client
        return [
            *("--etcd-ca", str(tls.ca), "--etcd-cert", str(tls.cert), "--etcd-key", str(tls.key)),
            *("--etcd-user", user, "--etcd-password-file", str(self.password_file(user))),
        ]

    def etcd_config(self, endpoints: list[str], user: str, timeout: float) -> EtcdConfig:
        """The suite's ``EtcdKV`` settings for ``endpoints`` as ``user``."""
        password = self.passwords()[user]
        return EtcdConfig(
            endpoints=tuple(endpoints),
            timeout=timeout,
            tls=self.etcd_client,
            credentials=EtcdCredentials(user, password),
        )
