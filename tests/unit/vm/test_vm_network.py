"""The guest's network settings on the kernel command line: the encoder, the Python decoder of the same
grammar, and the guest's real shell parser (NETCONF_SH under busybox sh) agree."""

from __future__ import annotations

import subprocess
from ipaddress import IPv4Interface, IPv4Network

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from services.replica.vm import GuestNetwork, InvalidVmSpec, NicSettings, decode_network, kernel_command_line
from services.replica.vm.network import COMMAND_LINE_SIZE, MAX_NICS, check_nic, encode_network
from services.replica.vm.scripts import NETCONF_SH

TENANT_NETWORKS = [IPv4Network("192.0.2.0/24"), IPv4Network("198.51.100.0/24"), IPv4Network("203.0.113.0/24")]


def shell_parse(command_line: str) -> list[str]:
    """The guest's own parser, run by busybox sh on ``command_line``."""
    done = subprocess.run(
        ["busybox", "sh", "-c", f'{NETCONF_SH}\noverland_parse "$1"', "sh", command_line],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return done.stdout.splitlines()


def normalized(network: GuestNetwork) -> list[str]:
    """What ``overland_parse`` prints for ``network``: "INDEX MAC IPS GW DNS", "-" for empty fields."""
    return [
        " ".join(
            [
                str(index),
                nic.mac,
                ",".join(a.with_prefixlen for a in nic.addresses) or "-",
                str(nic.gateway) if nic.gateway else "-",
                ",".join(map(str, nic.dns)) or "-",
            ]
        )
        for index, nic in enumerate(network.nics)
    ]


macs = st.tuples(st.integers(0, 127).map(lambda b: b * 2), *[st.integers(0, 255)] * 5).map(
    lambda octets: ":".join(f"{o:02x}" for o in octets)
)
tenant_ips = st.tuples(st.sampled_from(TENANT_NETWORKS), st.integers(1, 254)).map(
    lambda pair: pair[0].network_address + pair[1]
)
interfaces = st.tuples(tenant_ips, st.integers(24, 32)).map(
    lambda pair: IPv4Interface(f"{pair[0]}/{pair[1]}")
)


@st.composite
def nics(draw: st.DrawFn) -> NicSettings:
    mac = draw(macs.filter(lambda m: m != "00:00:00:00:00:00"))
    addresses = draw(st.lists(interfaces, max_size=4, unique_by=lambda a: a.ip))
    gateway = None
    if len(addresses) > 0 and draw(st.booleans()):
        gateway = draw(st.sampled_from(addresses)).network.network_address + draw(st.integers(1, 254))
    dns = draw(st.lists(tenant_ips, max_size=3))
    nic = NicSettings(mac, tuple(addresses), gateway, tuple(dns))
    try:
        check_nic(nic)
    except InvalidVmSpec:
        assume(False)
    return nic


networks = st.lists(nics(), max_size=3, unique_by=lambda nic: nic.mac).map(lambda n: GuestNetwork(tuple(n)))


@given(networks)
def test_the_decoder_reads_back_what_the_encoder_writes(network: GuestNetwork) -> None:
    assert decode_network(kernel_command_line(network)) == network


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    networks, st.lists(st.sampled_from(["quiet", "loglevel=4", "root=/dev/vda", "overland.x=1"]), max_size=3)
)
def test_the_guest_shell_parser_reads_what_the_encoder_writes(
    network: GuestNetwork, extra: list[str]
) -> None:
    assert shell_parse(kernel_command_line(network, extra=extra)) == normalized(network)


def test_the_encoding_is_the_documented_grammar() -> None:
    network = GuestNetwork(
        (
            NicSettings.parse(
                "52:54:00:AB:00:01", ["192.0.2.10/24", "198.51.100.10/25"], "192.0.2.1", ["192.0.2.53"]
            ),
            NicSettings.parse("52:54:00:ab:00:02"),
        )
    )
    assert encode_network(network) == [
        "overland.nic0.mac=52:54:00:ab:00:01",
        "overland.nic0.ip=192.0.2.10/24,198.51.100.10/25",
        "overland.nic0.gw=192.0.2.1",
        "overland.nic0.dns=192.0.2.53",
        "overland.nic1.mac=52:54:00:ab:00:02",
    ]
    assert kernel_command_line(network).startswith("console=ttyS0 panic=-1 overland.nic0.mac=")
    assert kernel_command_line(GuestNetwork(), break_at="initramfs") == (
        "console=ttyS0 panic=-1 overland.break=initramfs"
    )


@pytest.mark.parametrize(
    ("command_line", "expected"),
    [
        # Words off the grammar are ignored; a later word overrides an earlier one.
        (
            "overland.nic0.mac=52:54:00:00:00:01 overland.nic0.ip=192.0.2.1/24 overland.nic0.ip=192.0.2.2/24",
            ["0 52:54:00:00:00:01 192.0.2.2/24 - -"],
        ),
        ("overland.nic00.mac=52:54:00:00:00:01 overland.nicx.mac=a overland.nic0.mtu=9000 nic0.mac=b", []),
        ("overland.nic0ip=192.0.2.1/24 overland.nic0.mac overland.nic.mac=52:54:00:00:00:01", []),
        # Indexes sort as numbers, gaps stay, and a NIC without a MAC shows "-".
        (
            "overland.nic10.mac=52:54:00:00:00:0a overland.nic9.mac=52:54:00:00:00:09"
            " overland.nic2.gw=192.0.2.1",
            ["2 - - 192.0.2.1 -", "9 52:54:00:00:00:09 - - -", "10 52:54:00:00:00:0a - - -"],
        ),
        # Shell metacharacters in a value are data, never code; globs are not expanded.
        ("overland.nic0.mac=$(reboot) overland.nic0.dns=* overland.nic0.ip=`id`", ["0 $(reboot) `id` - *"]),
    ],
)
def test_the_shell_parser_follows_the_grammar_on_odd_input(command_line: str, expected: list[str]) -> None:
    assert shell_parse(command_line) == expected


def test_the_python_decoder_ignores_the_same_words_and_rejects_bad_values() -> None:
    assert (
        decode_network("quiet overland.nic00.mac=x overland.nic0.mtu=1 overland.nicx.ip=1") == GuestNetwork()
    )
    with pytest.raises(InvalidVmSpec, match="has no mac"):
        decode_network("overland.nic0.ip=192.0.2.10/24")
    with pytest.raises(InvalidVmSpec) as error:
        decode_network("overland.nic0.mac=52:54:00:00:00:01 overland.nic0.ip=192.0.2.300/24")
    assert error.value.violations[0].field == "overland.nic0"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"mac": "52-54-00-00-00-01"}, "nic.mac"),
        ({"mac": "53:54:00:00:00:01"}, "nic.mac"),
        ({"mac": "00:00:00:00:00:00"}, "nic.mac"),
        ({"addresses": ["192.0.2.0/24"]}, "nic.addresses"),
        ({"addresses": ["192.0.2.255/24"]}, "nic.addresses"),
        ({"addresses": ["192.0.2.1/0"]}, "nic.addresses"),
        ({"addresses": ["192.0.2.1/24", "192.0.2.1/25"]}, "nic.addresses"),
        ({"addresses": ["192.0.2.10/24"], "gateway": "198.51.100.1"}, "nic.gateway"),
        ({"addresses": ["192.0.2.10/24"], "gateway": "192.0.2.10"}, "nic.gateway"),
        ({"gateway": "192.0.2.1"}, "nic.gateway"),
        ({"dns": ["192.0.2.1"] * 5}, "nic.dns"),
        ({"addresses": ["192.0.2.1/33"]}, "nic"),
        ({"dns": ["not-an-address"]}, "nic"),
    ],
)
def test_bad_settings_name_the_field(kwargs: dict[str, object], field: str) -> None:
    arguments: dict[str, object] = {"mac": "52:54:00:00:00:01", **kwargs}
    with pytest.raises(InvalidVmSpec) as error:
        NicSettings.parse(**arguments)  # type: ignore[arg-type]
    assert error.value.violations[0].field == field


def test_point_to_point_prefixes_use_every_address() -> None:
    nic = NicSettings.parse("52:54:00:00:00:01", ["192.0.2.0/31", "192.0.2.255/32"])
    assert [str(a) for a in nic.addresses] == ["192.0.2.0/31", "192.0.2.255/32"]


def test_the_network_as_a_whole_is_checked() -> None:
    nic = NicSettings.parse("52:54:00:00:00:01")
    with pytest.raises(InvalidVmSpec, match="same MAC"):
        encode_network(GuestNetwork((nic, nic)))
    many = tuple(NicSettings.parse(f"52:54:00:00:00:{i:02x}") for i in range(MAX_NICS + 1))
    with pytest.raises(InvalidVmSpec, match="at most"):
        encode_network(GuestNetwork(many))
    with pytest.raises(InvalidVmSpec, match="break_at"):
        kernel_command_line(GuestNetwork(), break_at="rootfs")
    with pytest.raises(InvalidVmSpec, match="single kernel command-line word"):
        kernel_command_line(GuestNetwork(), extra=["two words"])


def test_the_command_line_must_fit_the_kernel() -> None:
    addresses = [f"{net.network_address + host}/24" for net in TENANT_NETWORKS for host in range(1, 17)][:16]
    nics = tuple(NicSettings.parse(f"52:54:00:00:00:{i:02x}", addresses) for i in range(MAX_NICS))
    with pytest.raises(InvalidVmSpec, match=str(COMMAND_LINE_SIZE - 1)):
        kernel_command_line(GuestNetwork(nics))
    fits = kernel_command_line(GuestNetwork(nics[:2]))
    assert len(fits) < COMMAND_LINE_SIZE
    assert decode_network(fits) == GuestNetwork(nics[:2])
