"""Who may change what in etcd: one etcd user per service role, each limited to its key prefixes
(docs/security.md), and the one place that creates them.

The plan is pure (``access_plan``): the ``policy`` user reads and writes the table, its indexes and its
meta keys (and the agents' keys, to quarantine unreadable ones), and reads everything under the root;
every host's agent is its own user, ``vswitch-<host>``, that reads the table and writes only its own two
host keys (its leased status and its PA registration). Per-host users, not one role on the hosts prefix:
the registration is what failover moves a VM's records to (``MoveLookupRecords`` by host name), so an
agent that could write any host's registration could redirect other hosts' VMs to itself. etcd grants
permissions on single keys as well as prefixes, so the limit is exact; its cost is a user per host, made
when the host joins (``EtcdAccess.ensure_host``).

``EtcdAccess`` applies a plan through the Auth API as root, idempotently: it creates what is missing,
sets each user's password, makes each role's permissions exactly the plan's, and enables
authentication last (so a half-applied plan never locks anyone out). ``python -m
services.common.etcd_auth --users DIR`` does it from a directory of password files (root, policy,
vswitch-<host>...): the Kubernetes Job of deploy/k8s runs it.

Every role may also read the one reserved key ``\\0``: the client reads it for the store's revision
(``current_revision``) and watches it to learn the compact revision.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from etcd3 import etcdrpc
from etcd3.etcdrpc import auth_pb2

from services.common.config import CommandLine, ConfigError, EtcdConfig, EtcdCredentials, report
from services.common.errors import FieldViolation, ServiceError
from services.common.etcd_kv import EtcdKV
from services.common.kv import prefix_end
from services.common.schema import keys

log = logging.getLogger(__name__)

ROOT_USER = "root"
POLICY_USER = "policy"
POLICY_ROLE = "overland-policy"
# Read-only on the table: every agent has it; its writes come from its own host role.
VSWITCH_ROLE = "overland-vswitch"
HOST_USER_PREFIX = "vswitch-"
HOST_ROLE_PREFIX = "overland-host-"
# The key every role may read: see the module docstring.
PROBE_KEY = b"\0"
_HOST_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
_NOT_ENABLED = "authentication is not enabled"


@dataclass(frozen=True, order=True)
class Permission:
    """Read (or read and write) one key, or every key under a prefix."""

    key: bytes
    prefix: bool
    write: bool

    @property
    def range_end(self) -> bytes:
        return prefix_end(self.key) if self.prefix else b""

    def message(self) -> Any:
        kind = auth_pb2.Permission.READWRITE if self.write else auth_pb2.Permission.READ
        return auth_pb2.Permission(permType=kind, key=self.key, range_end=self.range_end)

    def covers(self, key: bytes) -> bool:
        return key.startswith(self.key) if self.prefix else key == self.key

    def describe(self) -> str:
        what = "read-write" if self.write else "read"
        shown = self.key.decode(errors="replace").replace("\0", "\\0")
        return f"{what} {shown}{'*' if self.prefix else ''}"


def _read(key: bytes, *, prefix: bool = True) -> Permission:
    return Permission(key, prefix, write=False)


def _write(key: bytes, *, prefix: bool = True) -> Permission:
    return Permission(key, prefix, write=True)


@dataclass(frozen=True)
class Role:
    name: str
    permissions: tuple[Permission, ...]


@dataclass(frozen=True)
class User:
    name: str
    roles: tuple[str, ...]


@dataclass(frozen=True)
class AccessPlan:
    """The roles and users one deployment needs (root is always one of the users)."""

    roles: tuple[Role, ...]
    users: tuple[User, ...]

    def role(self, name: str) -> Role:
        return next(r for r in self.roles if r.name == name)

    def permits(self, user: str, key: bytes, *, write: bool) -> bool:
        """Whether the plan lets ``user`` read (or write) ``key``, as etcd decides it: root may do
        anything, others what one of their roles' permissions covers."""
        roles = next(u.roles for u in self.users if u.name == user)
        if "root" in roles:
            return True
        return any(
            p.covers(key) and (p.write or not write)
            for r in self.roles
            if r.name in roles
            for p in r.permissions
        )


POLICY_PERMISSIONS = (
    # Everything under the root: WatchTable streams every key of it, GetHost and ListHosts read the
    # agents' keys, MoveLookupRecords compares a host's registration.
    _read(keys.ROOT),
    _write(keys.PA_PREFIX),
    _write(keys.TABLE_PREFIX),
    _write(keys.ROOT + b"index/"),
    _write(keys.ROOT + b"meta/"),
    # The agents' keys only to quarantine one it cannot read (etcd has no delete-only permission).
    # The service already decides every record's PA: this gives it no new say over where traffic goes.
    _write(keys.HOSTS_PREFIX),
    _write(keys.REGISTRY_PREFIX),
    _write(keys.QUARANTINE_PREFIX),
    _read(PROBE_KEY, prefix=False),
)
VSWITCH_PERMISSIONS = (
    _read(keys.PA_PREFIX),
    _read(keys.TABLE_PREFIX),
    _read(PROBE_KEY, prefix=False),
)


def host_user(host_name: str) -> str:
    """The etcd user of one host's agent."""
    return HOST_USER_PREFIX + host_name


def host_role(host_name: str) -> Role:
    """Read and write exactly the host's two keys."""
    return Role(
        HOST_ROLE_PREFIX + host_name,
        (
            _write(keys.host_key(host_name), prefix=False),
            _write(keys.registration_key(host_name), prefix=False),
        ),
    )


def check_host_name(host_name: str) -> None:
    if not _HOST_NAME.match(host_name):
        raise ConfigError(
            f"host name {host_name!r}: 1-63 letters, digits, '.', '_' or '-'",
            [FieldViolation("hosts", "1-63 letters, digits, '.', '_' or '-'")],
        )


def access_plan(hosts: Iterable[str] = ()) -> AccessPlan:
    """root, the policy service, and one agent user per host in ``hosts``."""
    roles = [Role(POLICY_ROLE, POLICY_PERMISSIONS), Role(VSWITCH_ROLE, VSWITCH_PERMISSIONS)]
    users = [User(ROOT_USER, ("root",)), User(POLICY_USER, (POLICY_ROLE,))]
    for host in sorted(set(hosts)):
        check_host_name(host)
        role = host_role(host)
        roles.append(role)
        users.append(User(host_user(host), (VSWITCH_ROLE, role.name)))
    return AccessPlan(tuple(roles), tuple(users))


def hosts_of(user_names: Iterable[str]) -> list[str]:
    """The hosts whose agent users are among ``user_names`` (``vswitch-<host>``)."""
    return [name.removeprefix(HOST_USER_PREFIX) for name in user_names if name.startswith(HOST_USER_PREFIX)]


def _already(error: ServiceError) -> bool:
    return "already exists" in error.message or "already granted" in error.message


class EtcdAccess:
    """Applies an ``AccessPlan`` to the etcd of ``config`` as root (``config.credentials``)."""

    def __init__(self, config: EtcdConfig):
        if config.credentials is None or config.credentials.user != ROOT_USER:
            raise ConfigError("managing etcd users needs the root user's credentials")
        self.config = config

    def auth_enabled(self) -> bool:
        """Whether etcd asks for credentials; a wrong root password raises ``KVAuthenticationError``."""
        assert self.config.credentials is not None
        credentials = self.config.credentials
        request = etcdrpc.AuthenticateRequest(name=credentials.user, password=credentials.password)
        with EtcdKV.from_config(replace(self.config, credentials=None)) as kv:
            # Root's authentication, made by hand: its errors name root.
            kv.user = credentials.user
            try:
                kv.auth("Authenticate", request)
            except ServiceError as error:
                if _NOT_ENABLED in error.message:
                    return False
                raise
        return True

    def apply(self, plan: AccessPlan, passwords: Mapping[str, str]) -> None:
        """Make etcd's users and roles the plan's (each user with its password) and enable
        authentication. Roles and users not in the plan are left alone."""
        missing = sorted({u.name for u in plan.users} - set(passwords))
        if missing:
            raise ConfigError(f"no password for the etcd users {', '.join(missing)}")
        enabled = self.auth_enabled()
        config = self.config if enabled else replace(self.config, credentials=None)
        with EtcdKV.from_config(config) as kv:
            for role in plan.roles:
                self._role(kv, role)
            for user in plan.users:
                self._user(kv, user, passwords[user.name])
            if not enabled:
                kv.auth("AuthEnable", etcdrpc.AuthEnableRequest())
                log.info("etcd authentication enabled", extra={"endpoints": ",".join(self.config.endpoints)})

    def _role(self, kv: EtcdKV, role: Role) -> None:
        if role.name == "root":
            return
        try:
            kv.auth("RoleAdd", etcdrpc.AuthRoleAddRequest(name=role.name))
        except ServiceError as error:
            if not _already(error):
                raise
        held = kv.auth("RoleGet", etcdrpc.AuthRoleGetRequest(role=role.name)).perm
        wanted = {(p.key, p.range_end, p.message().permType) for p in role.permissions}
        for perm in held:
            if (perm.key, perm.range_end, perm.permType) not in wanted:
                request = etcdrpc.AuthRoleRevokePermissionRequest(
                    role=role.name, key=perm.key, range_end=perm.range_end
                )
                kv.auth("RoleRevokePermission", request)
        present = {(perm.key, perm.range_end, perm.permType) for perm in held}
        for permission in role.permissions:
            message = permission.message()
            if (message.key, message.range_end, message.permType) not in present:
                kv.auth(
                    "RoleGrantPermission",
                    etcdrpc.AuthRoleGrantPermissionRequest(name=role.name, perm=message),
                )

    def _user(self, kv: EtcdKV, user: User, password: str) -> None:
        try:
            kv.auth("UserAdd", etcdrpc.AuthUserAddRequest(name=user.name, password=password))
        except ServiceError as error:
            if not _already(error):
                raise
            kv.auth(
                "UserChangePassword", etcdrpc.AuthUserChangePasswordRequest(name=user.name, password=password)
            )
        held = set(kv.auth("UserGet", etcdrpc.AuthUserGetRequest(name=user.name)).roles)
        for role in user.roles:
            if role not in held:
                kv.auth("UserGrantRole", etcdrpc.AuthUserGrantRoleRequest(user=user.name, role=role))

    def ensure_host(self, host_name: str, password: str) -> None:
        """Add one host's agent user (a host joining): its role and user only."""
        plan = access_plan([host_name])
        with EtcdKV.from_config(self.config) as kv:
            self._role(kv, plan.role(HOST_ROLE_PREFIX + host_name))
            self._user(kv, plan.users[-1], password)


def write_private(path: Path, data: bytes) -> None:
    """Write a secret (a password, a private key) that only its owner may read."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as file:
        file.write(data)


def write_password(directory: Path, user: str, password: str | None = None) -> tuple[Path, str]:
    """``directory/user`` holding ``password`` (default: a new random one); the file and the password."""
    password = password or secrets.token_urlsafe(24)
    path = directory / user
    write_private(path, password.encode() + b"\n")
    return path, password


def read_passwords(directory: Path) -> dict[str, str]:
    """The passwords in ``directory``: one file per user, named by the user (a trailing newline is
    not part of it). ``ConfigError`` names an unreadable or empty file."""
    if not directory.is_dir():
        raise ConfigError(f"{directory} is not a directory of password files")
    passwords = {}
    for path in sorted(directory.iterdir()):
        # Kubernetes mounts a Secret with dot-named links beside the files.
        if path.name.startswith(".") or not path.is_file():
            continue
        try:
            password = path.read_text().rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as error:
            raise ConfigError(f"cannot read the password file {path}: {error}") from error
        if not password:
            raise ConfigError(f"the password file {path} is empty")
        passwords[path.name] = password
    return passwords


PROG = "python -m services.common.etcd_auth"


def load(
    argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None
) -> tuple[EtcdConfig, AccessPlan, dict[str, str]]:
    """What ``main`` applies: the etcd to reach as root, the plan for the users of ``--users DIR``
    (root, policy, vswitch-<host>...) and their passwords. ``ConfigError`` names what is wrong."""
    cli = CommandLine(
        None, "Create Overland's etcd users and roles, and enable authentication.", env, prog=PROG
    )
    cli.add_etcd_options()
    cli.parser.add_argument("--users", required=True, help="directory of password files, one per user")
    args = cli.parse(argv)
    passwords = read_passwords(Path(args.users))
    if ROOT_USER not in passwords:
        raise ConfigError(f"{args.users} has no password file for {ROOT_USER}")
    config = replace(cli.etcd(args), credentials=EtcdCredentials(ROOT_USER, passwords[ROOT_USER]))
    return cli.finish(config, "etcd"), access_plan(hosts_of(passwords)), passwords


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    """``python -m services.common.etcd_auth --users DIR [etcd flags]``: apply the plan for the users
    in DIR with root's password from DIR/root. Exit 0 when done, 2 for a configuration it cannot use,
    1 when etcd refused."""
    try:
        config, plan, passwords = load(argv, env)
    except ConfigError as error:
        return report(error, PROG)
    try:
        EtcdAccess(config).apply(plan, passwords)
    except ServiceError as error:
        sys.stderr.write(f"{PROG}: {error.message}\n")
        return 1
    for role in plan.roles:
        sys.stdout.write(f"etcd role {role.name}: {', '.join(p.describe() for p in role.permissions)}\n")
    for user in plan.users:
        sys.stdout.write(f"etcd user {user.name}: roles {', '.join(user.roles)}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
