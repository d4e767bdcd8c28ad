"""Fuzzing the decoders and the forwarding decisions: arbitrary and mutated bytes never raise anything
but ``DecodeError`` from a decoder, and never raise at all from a decision (a drop with a reason)."""

from __future__ import annotations

from collections.abc import Callable

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.vswitch.datapath import ActionKind, Context, PortInfo, decide_from_port, decide_from_wire
from services.vswitch.packets import (
    ARP_REQUEST,
    ETHERTYPE_IPV4,
    ArpPacket,
    DecodeError,
    DropReason,
    EthernetFrame,
    Ipv4Packet,
    decapsulate,
    decode_arp,
    decode_ethernet,
    decode_icmp,
    decode_ipv4,
    echo_request,
    encapsulate,
    encode_arp,
    encode_ethernet,
    encode_icmp,
    encode_ipv4,
    flow_id,
    mac_to_bytes,
    parse_nvgre,
)
from tests.unit.vswitch.forwarding_fixtures import BLUE_A, PA1, VMS, table

DECODERS: list[Callable[[bytes], object]] = [
    decode_ethernet,
    decode_ipv4,
    decode_arp,
    decode_icmp,
    decapsulate,
    parse_nvgre,
    flow_id,
]

VALID_INNER = encode_ethernet(
    EthernetFrame(
        mac_to_bytes(VMS["blue1"].mac),
        mac_to_bytes(VMS["blue2"].mac),
        ETHERTYPE_IPV4,
        encode_ipv4(
            Ipv4Packet(
                source=bytes([192, 0, 2, 12]),
                destination=bytes([192, 0, 2, 11]),
                protocol=1,
                payload=encode_icmp(echo_request(1, 1, b"x" * 16)),
            )
        ),
    )
)
VALID_ARP = encode_arp(
    ArpPacket(ARP_REQUEST, b"\x02" * 6, b"\xc0\x00\x02\x0b", b"\x00" * 6, b"\xc0\x00\x02\x0c")
)
VALID_OUTER = encapsulate(bytes([198, 18, 0, 2]), bytes([198, 18, 0, 1]), BLUE_A, VALID_INNER)
SEEDS = [VALID_INNER, VALID_ARP, VALID_OUTER, VALID_INNER[14:]]


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A valid frame or packet with a few bytes flipped, cut or inserted."""
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 4))):
        operation = draw(st.sampled_from(("flip", "cut", "insert")))
        index = draw(st.integers(0, max(len(data) - 1, 0)))
        if operation == "flip" and data:
            data[index] ^= draw(st.integers(1, 255))
        elif operation == "cut":
            del data[index:]
        else:
            data[index:index] = draw(st.binary(min_size=1, max_size=8))
    return bytes(data)


fuzz_input = st.binary(max_size=200) | mutated()
fuzz_settings = settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow], deadline=None)


@fuzz_settings
@given(fuzz_input)
def test_decoders_raise_only_decode_errors(data: bytes) -> None:
    reasons = []
    for decoder in DECODERS:
        try:
            decoder(data)
        except DecodeError as error:
            reasons.append(error.reason)
    assert all(isinstance(reason, DropReason) for reason in reasons)


@fuzz_settings
@given(fuzz_input)
def test_decisions_on_arbitrary_frames_never_raise(data: bytes) -> None:
    context = Context(table(), PA1, 1500, {})
    port = PortInfo("tap-blue1", BLUE_A, mac_to_bytes(VMS["blue1"].mac), bytes([192, 0, 2, 11]))
    for frame in (data, mac_to_bytes(VMS["blue2"].mac) + port.mac + data[12:]):
        action = decide_from_port(context, port, frame)
        assert action.kind in ActionKind
        if action.kind is ActionKind.DROP:
            assert isinstance(action.reason, DropReason)
    wire = decide_from_wire(
        Context(table(), PA1, 1500, {(BLUE_A, port.mac): port}), bytes([198, 18, 0, 2]), BLUE_A, data
    )
    assert wire.kind in (ActionKind.DROP, ActionKind.DELIVER)
    assert wire.kind is ActionKind.DROP or wire.port == port.name
