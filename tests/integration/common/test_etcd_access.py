"""Who may change what, enforced by a real etcd (TLS with client certificates, authentication, the
users and roles of services.common.etcd_auth): each role's user does what its service needs and is
refused outside its keys with an error naming the endpoint and the user; an agent cannot write the
table nor another host's keys; a wrong password or no user is named as such; tokens etcd forgets are
replaced; the plan is applied again without harm; the etcd_auth command line does it for an operator."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from overland.v1 import types_pb2
from services.common.config import EtcdCredentials
from services.common.etcd_auth import (
    POLICY_USER,
    ROOT_USER,
    EtcdAccess,
    access_plan,
    host_user,
    hosts_of,
    read_passwords,
)
from services.common.etcd_kv import EtcdKV
from services.common.etcd_process import EtcdProcess
from services.common.kv import Compare, Delete, KVAuthenticationError, KVPermissionDeniedError, Put
from services.common.schema import keys
from services.policy.unreadable import quarantine_key
from services.vswitch.agent import Agent
from services.vswitch.config import AgentConfig
from tests.conftest import ETCD_TEST_DEADLINE_SECONDS
from tests.unit.vswitch.agent_helpers import seed, started_agent, wait_until
from tests.unit.vswitch.table_factory import record

pytestmark = pytest.mark.etcd

HOST, OTHER = "host-a", "host-b"


def client(etcd: EtcdProcess, user: str | None) -> EtcdKV:
    return EtcdKV.from_config(etcd.etcd_config(user, timeout=ETCD_TEST_DEADLINE_SECONDS))


@pytest.fixture
def as_user(etcd_server: EtcdProcess) -> Iterator[dict[str, EtcdKV]]:
    clients = {user: client(etcd_server, user) for user in (ROOT_USER, POLICY_USER, host_user(HOST))}
    try:
        yield clients
    finally:
        for kv in clients.values():
            kv.close()


def refused(etcd: EtcdProcess, user: str, error: KVPermissionDeniedError) -> None:
    assert error.message.startswith(f"etcd {etcd.endpoint} ")
    assert f"user '{user}'" in error.message


def test_the_policy_user_writes_the_schemas_keys_and_nothing_else(
    etcd_server: EtcdProcess, as_user: dict[str, EtcdKV]
) -> None:
    policy = as_user[POLICY_USER]
    seed(policy, record(4096, "rd-blue", "192.0.2.10", "198.18.0.1"))
    written = policy.txn([Compare.absent(keys.TABLE_REVISION_KEY)], [Put(keys.TABLE_REVISION_KEY, b"")])
    assert written.succeeded
    assert len(policy.range(keys.ROOT).kvs) == 6
    assert policy.current_revision() == written.revision
    policy.watch(keys.ROOT, 0).cancel()
    # `overland policy check --quarantine` moves an agent's unreadable key aside.
    hand_written = keys.host_key(HOST)
    policy.txn([], [Put(hand_written, b"\x0a\xff")])
    moved = policy.txn([], [Put(quarantine_key(hand_written), b"\x0a\xff"), Delete(hand_written)])
    assert moved.succeeded
    assert policy.get(hand_written) is None
    assert policy.get(quarantine_key(hand_written)) is not None
    # A key under the root that is not the schema's (a later version's, another writer's).
    with pytest.raises(KVPermissionDeniedError) as denied:
        policy.txn([], [Put(keys.ROOT + b"future/x", b"forged")])
    refused(etcd_server, POLICY_USER, denied.value)
    with pytest.raises(KVPermissionDeniedError):
        policy.get(b"/elsewhere")


def test_an_agent_reads_the_table_and_writes_only_its_own_host(
    etcd_server: EtcdProcess, as_user: dict[str, EtcdKV]
) -> None:
    seed(as_user[ROOT_USER], record(4096, "rd-blue", "192.0.2.10", "198.18.0.1"))
    agent = as_user[host_user(HOST)]
    assert len(agent.range(keys.TABLE_PREFIX).kvs) == 3
    agent.watch(keys.TABLE_PREFIX, 0).cancel()
    lease = agent.grant_lease(10)
    agent.txn(
        [], [Put(keys.host_key(HOST), b"status", lease=lease.id), Put(keys.registration_key(HOST), b"pa")]
    )
    agent.revoke_lease(lease.id)
    for key in (
        keys.record_key("rd-blue", 4096, "192.0.2.10"),
        keys.TABLE_REVISION_KEY,
        keys.host_key(OTHER),
    ):
        with pytest.raises(KVPermissionDeniedError) as denied:
            agent.txn([], [Put(key, b"forged")])
        refused(etcd_server, host_user(HOST), denied.value)
    # It does not read what is not the table: the index, other hosts' registrations.
    with pytest.raises(KVPermissionDeniedError):
        agent.range(keys.VSID_INDEX_PREFIX)
    with pytest.raises(KVPermissionDeniedError) as watch_denied:
        agent.watch(keys.HOSTS_PREFIX, 0)
    refused(etcd_server, host_user(HOST), watch_denied.value)


def test_a_real_agent_runs_on_its_user_and_cannot_pose_as_another_host(etcd_server: EtcdProcess) -> None:
    root = client(etcd_server, ROOT_USER)
    seed(root, record(4096, "rd-blue", "192.0.2.10", "198.18.0.1"))
    revision = root.current_revision()
    config = AgentConfig(host_name=HOST, pa_ip="198.18.0.1", table_only=True, lease_ttl=4)
    own = client(etcd_server, host_user(HOST))
    impostor = client(etcd_server, host_user(OTHER))
    failures: list[BaseException] = []
    try:
        with started_agent(Agent(config, own)) as agent:
            assert agent.wait_for_revision(revision, 20)
            wait_until(lambda: agent.registration.registered, what="registered")
            stored = root.get(keys.registration_key(HOST))
            assert stored is not None
            assert types_pb2.StoreEntry.FromString(stored.value).host.pa_ip == "198.18.0.1"
        # Host B's user running as host A: it reads the table, but etcd refuses its writes of A's keys,
        # and the agent stops on that instead of running unregistered.
        with started_agent(Agent(replace(config, pa_ip="198.18.0.66"), impostor, on_failure=failures.append)):
            wait_until(lambda: bool(failures), what="the registration refused")
        assert isinstance(failures[0], KVPermissionDeniedError)
        assert f"user '{host_user(OTHER)}'" in str(failures[0])
        stored = root.get(keys.registration_key(HOST))
        assert stored is not None
        assert types_pb2.StoreEntry.FromString(stored.value).host.pa_ip == "198.18.0.1"
    finally:
        for kv in (root, own, impostor):
            kv.close()


def test_a_wrong_password_or_no_user_is_named(etcd_server: EtcdProcess) -> None:
    config = etcd_server.etcd_config(POLICY_USER, timeout=ETCD_TEST_DEADLINE_SECONDS)
    with EtcdKV.from_config(replace(config, credentials=EtcdCredentials(POLICY_USER, "wrong"))) as kv:
        with pytest.raises(KVAuthenticationError) as failed:
            kv.get(keys.TABLE_REVISION_KEY)
        assert failed.value.message.startswith(f"etcd {etcd_server.endpoint} ")
        assert "did not accept the password of user 'policy'" in failed.value.message
    # A client certificate alone: etcd takes its CN as the user, which is none of Overland's.
    with client(etcd_server, None) as anonymous, pytest.raises(KVPermissionDeniedError) as denied:
        anonymous.get(keys.TABLE_REVISION_KEY)
    assert "no --etcd-user" in denied.value.message


def test_tokens_etcd_forgets_are_replaced(etcd_server: EtcdProcess, as_user: dict[str, EtcdKV]) -> None:
    agent = as_user[host_user(HOST)]
    agent.range(keys.TABLE_PREFIX)
    # A restart forgets every token: the next call and the next watch authenticate again.
    etcd_server.restart()
    assert agent.range(keys.TABLE_PREFIX).kvs == ()
    etcd_server.restart()
    agent.watch(keys.TABLE_PREFIX, 0).cancel()


def test_the_plan_applies_again_and_survives_a_new_process(etcd_server: EtcdProcess, tmp_path: Path) -> None:
    users = etcd_server.users
    assert users is not None
    client(etcd_server, host_user(HOST)).close()
    passwords = read_passwords(users.directory)
    EtcdAccess(etcd_server.etcd_config(ROOT_USER)).apply(access_plan(hosts_of(passwords)), passwords)
    # What `make run` does when run again: a new process on the same data and password files.
    etcd_server.stop()
    again = EtcdProcess(
        etcd_server.data_dir, tls=etcd_server.tls, users=users, bcrypt_cost=etcd_server.bcrypt_cost
    ).start()
    try:
        with client(again, host_user(HOST)) as agent:
            agent.txn([], [Put(keys.registration_key(HOST), b"pa")])
    finally:
        again.close()


def test_the_command_line_applies_the_plan_and_names_a_refusal(
    etcd_server: EtcdProcess, tmp_path: Path
) -> None:
    users = etcd_server.users
    assert users is not None
    env = os.environ | etcd_server.environment(ROOT_USER)
    command = [sys.executable, "-m", "services.common.etcd_auth", "--users", str(users.directory)]
    (users.directory / host_user("host-c")).write_text("host-c-password\n")
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert f"etcd user {host_user('host-c')}: roles overland-vswitch, overland-host-host-c" in done.stdout
    with client(etcd_server, host_user("host-c")) as agent:
        agent.txn([], [Put(keys.host_key("host-c"), b"status")])
    (users.directory / ROOT_USER).write_text("not the root password\n")
    refused = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert refused.returncode == 1
    assert refused.stderr.count("\n") == 1
    assert f"etcd {etcd_server.endpoint}" in refused.stderr
    assert "did not accept the password of user 'root'" in refused.stderr
