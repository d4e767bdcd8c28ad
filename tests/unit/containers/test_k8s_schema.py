"""deploy/k8s as a cluster would receive it: ``kubectl kustomize`` renders it offline, and every object
it renders is valid against the Kubernetes API schema (``kubernetes-validate``, strict: an unknown
field is an error, as ``kubectl apply --validate=strict`` makes it)."""

from __future__ import annotations

import copy
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

MANIFESTS = Path(__file__).resolve().parents[3] / "deploy" / "k8s"
# The oldest Kubernetes the manifests are written for (docs/containers.md).
KUBERNETES_VERSION = "1.30"


@pytest.fixture(scope="module")
def rendered() -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    assert kubectl is not None, "kubectl renders the manifests (it ships in /usr/bin on these machines)"
    out = subprocess.run(
        [kubectl, "kustomize", str(MANIFESTS)], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def test_kustomize_renders_every_workload(rendered: list[dict[str, Any]]) -> None:
    kinds = {doc["kind"] for doc in rendered}
    assert {"Deployment", "StatefulSet", "DaemonSet", "Service", "ConfigMap"} <= kinds


def test_every_rendered_object_is_valid_against_the_api_schema(rendered: list[dict[str, Any]]) -> None:
    for doc in rendered:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_a_misspelled_field_would_be_refused(rendered: list[dict[str, Any]]) -> None:
    workload = next(doc for doc in rendered if doc["kind"] == "Deployment")
    broken = copy.deepcopy(workload)
    broken["spec"]["template"]["spec"]["containers"][0]["imagePullPolcy"] = "Never"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)
