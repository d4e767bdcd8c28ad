"""The agent registers its host's name and PA for good (``/overland/v1/registry/hosts/{host}``), beside
its leased status: the decision with hypothesis, and agents on MemoryKV that start, stop and move."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from overland.v1 import types_pb2
from services.common.clock import ManualClock
from services.common.kv import Put
from services.common.memory_kv import MemoryKV
from services.common.schema import keys, resource_from
from services.vswitch.agent import Agent, registration_to_write
from services.vswitch.config import AgentConfig
from tests.unit.vswitch.agent_helpers import FAST_BACKOFF, seed, wait_until

names = st.sampled_from(["host-1", "host-2"])
pas = st.sampled_from(["198.18.0.1", "198.18.0.2"])


@given(
    st.one_of(
        st.none(),
        st.builds(
            types_pb2.Host, host_name=names, pa_ip=pas, registration_time_unix_nanos=st.integers(1, 10**18)
        ),
    ),
    names,
    pas,
    st.integers(1, 10**18),
)
def test_a_registration_is_written_only_when_the_stored_one_differs(
    stored: types_pb2.Host | None, host_name: str, pa_ip: str, now: int
) -> None:
    wanted = registration_to_write(stored, host_name, pa_ip, now)
    if stored is not None and (stored.host_name, stored.pa_ip) == (host_name, pa_ip):
        # Restarting on the same PA keeps the registration and its time.
        assert wanted is None
        return
    assert wanted == types_pb2.Host(host_name=host_name, pa_ip=pa_ip, registration_time_unix_nanos=now)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def kv(clock: ManualClock) -> Iterator[MemoryKV]:
    store = MemoryKV(clock=clock, progress_interval=0.05)
    seed(store)
    try:
        yield store
    finally:
        store.close()


def _run_agent(kv: MemoryKV, pa_ip: str, clock: ManualClock) -> Agent:
    config = AgentConfig(host_name="host-1", pa_ip=pa_ip, table_only=True, backoff=FAST_BACKOFF)
    agent = Agent(config, kv, clock=clock)
    agent.start()
    wait_until(lambda: agent.registration.registered, what="registered")
    return agent


def _registration(kv: MemoryKV) -> tuple[types_pb2.Host, int, int]:
    found = kv.get(keys.registration_key("host-1"))
    assert found is not None
    return resource_from(found, types_pb2.Host), found.mod_revision, found.lease


def test_the_registration_outlives_the_agent_and_its_lease(kv: MemoryKV, clock: ManualClock) -> None:
    agent = _run_agent(kv, "198.18.0.1", clock)
    host, revision, lease = _registration(kv)
    assert (host.host_name, host.pa_ip) == ("host-1", "198.18.0.1")
    assert host.registration_time_unix_nanos > 0
    # Not on the lease: the status key is; the registration stays when the agent is gone.
    assert lease == 0
    assert kv.get(keys.host_key("host-1")) is not None
    agent.stop()
    assert kv.get(keys.host_key("host-1")) is None
    assert _registration(kv)[:2] == (host, revision)


def test_a_restart_on_the_same_pa_writes_nothing_and_a_new_pa_is_registered(
    kv: MemoryKV, clock: ManualClock
) -> None:
    _run_agent(kv, "198.18.0.1", clock).stop()
    first, revision, _ = _registration(kv)
    clock.advance(60)
    _run_agent(kv, "198.18.0.1", clock).stop()
    assert _registration(kv)[:2] == (first, revision)
    clock.advance(60)
    _run_agent(kv, "198.18.0.2", clock).stop()
    moved, moved_revision, _ = _registration(kv)
    assert moved.pa_ip == "198.18.0.2"
    assert moved_revision > revision
    assert moved.registration_time_unix_nanos > first.registration_time_unix_nanos


def test_a_registration_that_does_not_decode_is_written_again(kv: MemoryKV, clock: ManualClock) -> None:
    kv.txn([], [Put(keys.registration_key("host-1"), b"\xff\xff not an entry")])
    _run_agent(kv, "198.18.0.1", clock).stop()
    assert _registration(kv)[0].pa_ip == "198.18.0.1"
