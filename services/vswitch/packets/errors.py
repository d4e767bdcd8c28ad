"""Why a frame was dropped, and the typed error the pure decoders raise."""

from __future__ import annotations

import enum

from services.common.errors import InvalidArgument


class DropReason(enum.StrEnum):
    """A drop reason; its value is the key of ``overland.v1.Counters.drops``."""

    TRUNCATED = "truncated"
    BAD_IP_HEADER = "bad_ip_header"
    BAD_CHECKSUM = "bad_checksum"
    FRAGMENT = "fragment"
    NOT_GRE = "not_gre"
    BAD_GRE_FLAGS = "bad_gre_flags"
    NOT_NVGRE = "not_nvgre"
    RESERVED_VSID = "reserved_vsid"
    VLAN_TAGGED = "vlan_tagged"
    UNSUPPORTED_ETHERTYPE = "unsupported_ethertype"
    BAD_ARP = "bad_arp"
    UNKNOWN_VSID = "unknown_vsid"
    WRONG_VSID = "wrong_vsid"
    NO_PORT = "no_port"
    PORT_WITHOUT_RECORD = "port_without_record"
    UNKNOWN_SOURCE_PA = "unknown_source_pa"
    SOURCE_MAC_SPOOFED = "source_mac_spoofed"
    SOURCE_IP_SPOOFED = "source_ip_spoofed"
    BROADCAST = "broadcast"
    UNKNOWN_DESTINATION = "unknown_destination"
    ARP_UNKNOWN_TARGET = "arp_unknown_target"
    NO_ROUTE = "no_route"
    TTL_EXCEEDED = "ttl_exceeded"
    TOO_BIG = "too_big"
    TRANSLATION_NONE = "translation_none"
    EXTENSION = "extension"
    SEND_FAILED = "send_failed"
    TABLE_CHANGING = "table_changing"


class PacketError(InvalidArgument):
    """Base of the packet codec errors."""


class DecodeError(PacketError):
    """Bytes that are not a valid frame or packet of the expected kind; ``reason`` says why."""

    def __init__(self, reason: DropReason, message: str):
        super().__init__(f"{reason.value}: {message}")
        self.reason = reason


class EncodeError(PacketError):
    """Values that cannot be encoded (out of range, wrong length)."""
