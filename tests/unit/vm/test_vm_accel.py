"""Choosing the accelerator: the decision, the probe's cache, and its key."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pytest

from services.replica.vm import Accel, ProbeKey, detect_accel, kvm_opens
from services.replica.vm import accel as accel_module
from services.replica.vm.accel import read_cache, write_cache

KEY = ProbeKey("QEMU emulator version 7.2.22", "6.18.44", True)


@pytest.fixture
def probes(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Replaces the KVM boot probe with one that records its calls and says KVM boots."""
    calls: list[Path] = []

    def fake_kvm_boots(kernel: Path, initrd: Path, **_: object) -> bool:
        calls.append(kernel)
        return True

    monkeypatch.setattr(accel_module, "kvm_boots", fake_kvm_boots)
    return calls


def test_no_kvm_device_means_tcg_without_a_probe(tmp_path: Path, probes: list[Path]) -> None:
    cache = tmp_path / "accel.json"
    chosen = detect_accel(Path("/k"), Path("/i"), cache, device=tmp_path / "no-kvm")
    assert chosen is Accel.TCG
    assert probes == []
    assert json.loads(cache.read_text())["accel"] == "tcg"


def test_a_kvm_device_that_opens_is_probed_once_then_cached(tmp_path: Path, probes: list[Path]) -> None:
    device = tmp_path / "kvm"
    device.write_bytes(b"")
    cache = tmp_path / "cache" / "accel.json"
    assert detect_accel(Path("/k"), Path("/i"), cache, device=device) is Accel.KVM
    assert detect_accel(Path("/k"), Path("/i"), cache, device=device) is Accel.KVM
    assert probes == [Path("/k")]


def test_a_kvm_that_hangs_falls_back_to_tcg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(accel_module, "kvm_boots", lambda *_args, **_kwargs: False)
    device = tmp_path / "kvm"
    device.write_bytes(b"")
    assert detect_accel(Path("/k"), Path("/i"), tmp_path / "accel.json", device=device) is Accel.TCG


def test_the_cache_answers_only_for_its_own_key(tmp_path: Path) -> None:
    cache = tmp_path / "accel.json"
    assert read_cache(cache, KEY) is None
    write_cache(cache, KEY, Accel.KVM)
    assert read_cache(cache, KEY) is Accel.KVM
    assert read_cache(cache, ProbeKey(KEY.qemu_version, "6.19.0", True)) is None
    assert read_cache(cache, ProbeKey(KEY.qemu_version, KEY.host_kernel, False)) is None
    cache.write_text("{not json")
    assert read_cache(cache, KEY) is None
    cache.write_text(json.dumps({"key": asdict(KEY), "accel": "warp"}))
    assert read_cache(cache, KEY) is None


def test_kvm_opens_needs_a_device_we_can_open(tmp_path: Path) -> None:
    assert not kvm_opens(tmp_path / "missing")
    device = tmp_path / "kvm"
    device.write_bytes(b"")
    assert kvm_opens(device)
