"""The etcd access plan (pure): each service role reaches exactly its keys. The policy service writes the
table, its indexes and meta keys, the agents' keys (to quarantine) and the quarantine, and nothing else;
an agent reads the table and writes only its own host's two keys; every role reads the probe key; root
does anything. Real etcd enforcing the same plan: tests/integration/common/test_etcd_access.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from services.common.config import ConfigError
from services.common.etcd_auth import (
    POLICY_USER,
    PROBE_KEY,
    ROOT_USER,
    access_plan,
    host_user,
    hosts_of,
    read_passwords,
    write_password,
)
from services.common.schema import keys

HOSTS = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,20}", fullmatch=True)
TABLE_KEYS = [
    keys.pa_key("198.18.0.1"),
    keys.domain_key("rd-blue"),
    keys.record_key("rd-blue", 5001, "192.0.2.10"),
    keys.TABLE_REVISION_KEY,
    keys.pa_ref_key("198.18.0.1"),
    keys.VSID_INDEX_PREFIX + b"00001389",
]


@given(host=HOSTS)
def test_the_policy_service_writes_the_schemas_keys_and_nothing_else(host: str) -> None:
    plan = access_plan([host])
    quarantined = keys.QUARANTINE_PREFIX + b"v1/hosts/" + host.encode()
    for key in (*TABLE_KEYS, keys.host_key(host), keys.registration_key(host), quarantined):
        assert plan.permits(POLICY_USER, key, write=True), key
    # Under the root it reads everything (WatchTable), and writes only the schema's prefixes.
    assert plan.permits(POLICY_USER, keys.ROOT + b"future/x", write=False)
    assert not plan.permits(POLICY_USER, keys.ROOT + b"future/x", write=True)
    assert not plan.permits(POLICY_USER, b"/elsewhere", write=False)


@given(host=HOSTS, other=HOSTS)
def test_an_agent_reads_the_table_and_writes_only_its_own_host(host: str, other: str) -> None:
    assume(host != other)
    plan = access_plan([host, other])
    user = host_user(host)
    for key in (keys.pa_key("198.18.0.1"), keys.record_key("rd-blue", 5001, "192.0.2.10")):
        assert plan.permits(user, key, write=False)
        assert not plan.permits(user, key, write=True)
    for key in (keys.host_key(host), keys.registration_key(host)):
        assert plan.permits(user, key, write=True)
    for key in (keys.host_key(other), keys.registration_key(other), keys.TABLE_REVISION_KEY):
        assert not plan.permits(user, key, write=True)
    # Nor its neighbour whose name starts with its own: the host keys are exact, not prefixes.
    assert not plan.permits(user, keys.host_key(host + "x"), write=True)
    assert not plan.permits(user, keys.VSID_INDEX_PREFIX + b"00001389", write=False)


def test_every_role_reads_the_probe_key_and_root_does_anything() -> None:
    plan = access_plan(["h1"])
    for user in plan.users:
        assert plan.permits(user.name, PROBE_KEY, write=False), user.name
    assert plan.permits(ROOT_USER, b"/anything", write=True)
    assert [u.name for u in plan.users] == [ROOT_USER, POLICY_USER, "vswitch-h1"]


@pytest.mark.parametrize("host", ["", "-h", "a/b", "x" * 64, "two words"])
def test_a_bad_host_name_is_refused(host: str) -> None:
    with pytest.raises(ConfigError, match="host name"):
        access_plan([host])


def test_the_hosts_are_the_agent_users_among_the_password_files(tmp_path: Path) -> None:
    for user in ("root", "policy", "vswitch-h1", "vswitch-h2"):
        write_password(tmp_path, user)
    # Kubernetes puts dot-named links beside a Secret's files.
    (tmp_path / "..data").mkdir()
    passwords = read_passwords(tmp_path)
    assert sorted(passwords) == ["policy", "root", "vswitch-h1", "vswitch-h2"]
    assert hosts_of(passwords) == ["h1", "h2"]
    assert all(len(p) >= 24 for p in passwords.values())
    assert (tmp_path / "root").stat().st_mode & 0o777 == 0o600


def test_an_empty_password_file_is_named(tmp_path: Path) -> None:
    (tmp_path / "policy").write_text("\n")
    with pytest.raises(ConfigError, match=str(tmp_path / "policy")):
        read_passwords(tmp_path)
