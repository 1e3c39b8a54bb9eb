"""The Kubernetes manifests: every rendered resource validates in strict mode, offline, and
they wire the services as docs/kubernetes.md says."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from teaclave_ma.formats.runtime_config import parse_runtime_config
from teaclave_ma.formats.service_config import parse_service_config
from teaclave_ma.formats.strict import parse_yaml_mapping
from tests.conftest import PROJECT_ROOT

KUBERNETES = PROJECT_ROOT / "deploy" / "kubernetes"
OVERLAYS = ("simulated", "sgx")
SERVICES = ("kms", "storage", "authentication", "frontend")
K8S_VERSION = "1.30.0"  # the oldest version still supported upstream when this was written


def rendered(overlay: str) -> list[dict[str, Any]]:
    text = (KUBERNETES / "rendered" / f"{overlay}.yaml").read_text()
    return [document for document in yaml.safe_load_all(text) if document]


def resource(documents: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [d for d in documents if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def workload(documents: list[dict[str, Any]], service: str) -> dict[str, Any]:
    return resource(documents, "StatefulSet" if service == "kms" else "Deployment", service)


def runtime_yaml(documents: list[dict[str, Any]], service: str) -> str:
    pod = workload(documents, service)["spec"]["template"]["spec"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == "runtime"]
    config_map = resource(documents, "ConfigMap", volume["configMap"]["name"])
    text: str = config_map["data"]["runtime.yaml"]
    return text


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_rendered_resource_validates_strictly(overlay: str) -> None:
    documents = rendered(overlay)
    assert len(documents) >= 12
    for document in documents:
        # Raises ValidationError on an unknown field or a wrong type.
        kubernetes_validate.validate(document, K8S_VERSION, strict=True)


def test_strict_validation_catches_a_misspelt_field() -> None:
    document = workload(rendered("simulated"), "storage")
    document["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError, match="livenesProbe"):
        kubernetes_validate.validate(document, K8S_VERSION, strict=True)


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl (with kustomize) not here")
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_rendered_files_are_what_kustomize_makes(overlay: str) -> None:
    made = subprocess.run(
        ["kubectl", "kustomize", str(KUBERNETES / "overlays" / overlay)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert made == (KUBERNETES / "rendered" / f"{overlay}.yaml").read_text(), (
        f"re-render: kubectl kustomize deploy/kubernetes/overlays/{overlay} "
        f"> deploy/kubernetes/rendered/{overlay}.yaml"
    )


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("service", SERVICES)
def test_each_service_has_probes_on_the_health_port_and_a_service(
    overlay: str, service: str
) -> None:
    documents = rendered(overlay)
    pod = workload(documents, service)["spec"]["template"]["spec"]
    container = pod["containers"][0]
    health = {port["name"]: port["containerPort"] for port in container["ports"]}["health"]
    assert health == 9100
    assert container["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "health"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "health"}
    assert resource(documents, "Service", service)["spec"]["ports"][0]["port"] == 7000
    runtime = parse_yaml_mapping(runtime_yaml(documents, service).encode(), "runtime.yaml")
    assert runtime["health"] == {"listen": "0.0.0.0:9100"}


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("service", SERVICES)
def test_runtime_yaml_addresses_each_outbound_peer_by_dns_name(
    overlay: str, service: str, tmp_path: Path
) -> None:
    text = runtime_yaml(rendered(overlay), service)
    config = parse_runtime_config(text.encode(), tmp_path, "runtime.yaml")
    assert config.health is not None and config.health.listen == ("0.0.0.0", 9100)
    outbound = parse_service_config(
        (PROJECT_ROOT / "services" / service / "service.yaml").read_bytes(), service
    ).outbound
    assert config.peers == {peer: (f"{peer}.teaclave.svc.cluster.local", 7000) for peer in outbound}
    if overlay == "sgx":
        assert config.attestation.pccs_url is not None
        assert config.attestation.pccs_url.startswith("https://")
    else:
        assert config.attestation.platform_dir == Path("/app/sim-platform")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_manifest_configmap_is_mounted_whole_so_the_kubelet_updates_it(
    overlay: str,
) -> None:
    documents = rendered(overlay)
    resource(documents, "ConfigMap", "teaclave-manifest")
    for service in SERVICES:
        pod = workload(documents, service)["spec"]["template"]["spec"]
        (volume,) = [v for v in pod["volumes"] if v["name"] == "manifest"]
        assert volume["configMap"]["name"] == "teaclave-manifest"
        (mount,) = [m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "manifest"]
        # A subPath mount never sees an update; the whole directory does, in one swap.
        assert mount == {
            "name": "manifest",
            "mountPath": "/etc/teaclave/manifest",
            "readOnly": True,
        }


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_kms_keeps_its_sealed_store_on_a_volume(overlay: str, tmp_path: Path) -> None:
    documents = rendered(overlay)
    kms = resource(documents, "StatefulSet", "kms")
    (claim,) = kms["spec"]["volumeClaimTemplates"]
    mounts = {
        m["name"]: m["mountPath"]
        for m in kms["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
    }
    text = runtime_yaml(documents, "kms")
    state_dir = parse_yaml_mapping(text.encode(), "runtime.yaml")["state_dir"]
    assert mounts[claim["metadata"]["name"]] == state_dir
    assert "--initialize-state" not in kms["spec"]["template"]["spec"]["containers"][0]["args"]


def test_sgx_pods_ask_the_device_plugin_for_sgx() -> None:
    documents = rendered("sgx")
    for service in SERVICES:
        pod = workload(documents, service)["spec"]["template"]["spec"]
        container = pod["containers"][0]
        limits = container["resources"]["limits"]
        assert {"sgx.intel.com/epc", "sgx.intel.com/enclave", "sgx.intel.com/provision"} <= set(
            limits
        )
        assert container["command"] == ["gramine-sgx"]
        assert pod["nodeSelector"] == {"intel.feature.node.kubernetes.io/sgx": "true"}
    # The simulated profile needs no SGX node.
    for service in SERVICES:
        pod = workload(rendered("simulated"), service)["spec"]["template"]["spec"]
        assert "nodeSelector" not in pod
        assert "sgx.intel.com/epc" not in pod["containers"][0]["resources"].get("limits", {})


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_no_pod_runs_as_root_or_with_the_api_token(overlay: str) -> None:
    for service in SERVICES:
        pod = workload(rendered(overlay), service)["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["automountServiceAccountToken"] is False
        for container in pod["containers"]:
            assert container["securityContext"]["allowPrivilegeEscalation"] is False
            assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
