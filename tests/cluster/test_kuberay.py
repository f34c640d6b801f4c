"""deploy/kuberay.yaml must be a RayCluster KubeRay accepts, and hang together.

The RayCluster is validated against the OpenAPI v3 schema of KubeRay's own
CRD (``tests/data/kuberay_raycluster_v1.7.0.schema.json``: the CRD's schema
with the text descriptions and ``status`` removed; source and version are in
the file). The API server prunes fields a structural schema does not know and
``kubectl apply`` refuses them (strict field validation), so the test closes
every object that lists its properties (``additionalProperties: false``)
unless the schema keeps unknown fields: a misspelt field fails here as it
would there. CEL rules (``x-kubernetes-validations``) are not evaluated.

The Service and the pods are checked against the Kubernetes rules that matter
here: container ports, probes, resources, and a selector that matches the
labels KubeRay puts on the head pod. No cluster is needed.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import ray
import yaml

from tests.cluster.test_ray_config import (
    GATEWAY_FLAG,
    METRICS_FLAG,
    flag_value,
    parse_with_cli,
    serve_argv,
)

ROOT = Path(__file__).resolve().parents[2]
MANIFEST_PATH = ROOT / "deploy" / "kuberay.yaml"
SCHEMA_PATH = ROOT / "tests" / "data" / "kuberay_raycluster_v1.7.0.schema.json"

# Kubernetes: a port name is an IANA_SVC_NAME (at most 15 characters).
PORT_NAME = re.compile(r"^(?=.{1,15}$)(?=.*[a-z])[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
# Labels KubeRay sets on the head pod of a RayCluster (utils.RayClusterLabelKey,
# utils.RayNodeTypeLabelKey).
CLUSTER_LABEL = "ray.io/cluster"
NODE_TYPE_LABEL = "ray.io/node-type"


def strict(schema: Any) -> Any:
    """Close every object schema that lists its properties, as pruning does."""
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    closed = {key: strict(value) for key, value in schema.items()}
    if (
        "properties" in closed
        and "additionalProperties" not in closed
        and not closed.get("x-kubernetes-preserve-unknown-fields")
    ):
        closed["additionalProperties"] = False
    return closed


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft7Validator:
    vendored = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    assert vendored["crd"] == "rayclusters.ray.io" and vendored["crd_version"] == "v1"
    schema = strict(vendored["openAPIV3Schema"])
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


@pytest.fixture(scope="module")
def documents() -> list[dict[str, Any]]:
    docs = [d for d in yaml.safe_load_all(MANIFEST_PATH.read_text(encoding="utf-8")) if d]
    assert all(isinstance(d, dict) for d in docs)
    return docs


def _one(documents: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [d for d in documents if d.get("kind") == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


@pytest.fixture(scope="module")
def cluster(documents: list[dict[str, Any]]) -> dict[str, Any]:
    return _one(documents, "RayCluster")


@pytest.fixture(scope="module")
def service(documents: list[dict[str, Any]]) -> dict[str, Any]:
    return _one(documents, "Service")


def _errors(validator: jsonschema.Draft7Validator, obj: dict[str, Any]) -> list[str]:
    return [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(obj)
    ]


def _head(cluster: dict[str, Any]) -> dict[str, Any]:
    container: dict[str, Any] = cluster["spec"]["headGroupSpec"]["template"]["spec"]["containers"][
        0
    ]
    return container


def _ports(container: dict[str, Any]) -> dict[str, int]:
    return {p["name"]: p["containerPort"] for p in container["ports"]}


def _head_serve(cluster: dict[str, Any]) -> list[str]:
    return serve_argv(" ".join(_head(cluster)["args"]))


def test_raycluster_matches_kuberay_crd(
    cluster: dict[str, Any], validator: jsonschema.Draft7Validator
) -> None:
    assert cluster["apiVersion"] == "ray.io/v1"
    assert _errors(validator, cluster) == []


@pytest.mark.parametrize(
    "mutation",
    [
        "misspelt container field",
        "replicas as text",
        "no head template",
        "worker group without maxReplicas",
        "bad port value",
    ],
)
def test_schema_check_is_not_a_rubber_stamp(
    cluster: dict[str, Any], validator: jsonschema.Draft7Validator, mutation: str
) -> None:
    broken = copy.deepcopy(cluster)
    spec = broken["spec"]
    worker = spec["workerGroupSpecs"][0]
    if mutation == "misspelt container field":
        container = _head(broken)
        container["imagePulPolicy"] = container.pop("imagePullPolicy")
    elif mutation == "replicas as text":
        worker["replicas"] = "1"
    elif mutation == "no head template":
        del spec["headGroupSpec"]["template"]
    elif mutation == "worker group without maxReplicas":
        del worker["maxReplicas"]
    else:
        _head(broken)["ports"][0]["containerPort"] = "6379"
    assert _errors(validator, broken), mutation


def test_ray_version_matches_installed(cluster: dict[str, Any]) -> None:
    assert cluster["spec"]["rayVersion"] == ray.__version__


def test_head_starts_ray_then_execs_serve(cluster: dict[str, Any]) -> None:
    template = cluster["spec"]["headGroupSpec"]["template"]
    # KubeRay leaves the command to us only with this annotation, and then
    # hands its generated `ray start` over in KUBERAY_GEN_RAY_START_CMD.
    assert template["metadata"]["annotations"]["ray.io/overwrite-container-cmd"] == "true"
    container = _head(cluster)
    assert container["command"] == ["/bin/bash", "-lc", "--"]
    (script,) = container["args"]
    start = script.index("${KUBERAY_GEN_RAY_START_CMD/--block/}")
    serve = script.index("exec ray-realtime serve")
    assert start < serve
    assert "&&" in script[start:serve], "serve must not start when ray start failed"
    argv = _head_serve(cluster)
    assert flag_value(argv, "--address") == "auto"


def test_serve_ports_are_the_container_ports(cluster: dict[str, Any]) -> None:
    argv = _head_serve(cluster)
    ports = _ports(_head(cluster))
    assert ports["gateway"] == int(flag_value(argv, GATEWAY_FLAG))
    assert ports["metrics"] == int(flag_value(argv, METRICS_FLAG))
    assert ports["gcs-server"] == 6379
    assert ports["dashboard"] == 8265
    assert 10001 not in ports.values(), "Ray client is not used"
    # Ray's metrics agent on every pod exports on the port serve names.
    groups = [cluster["spec"]["headGroupSpec"], *cluster["spec"]["workerGroupSpecs"]]
    for group in groups:
        assert group["rayStartParams"]["metrics-export-port"] == str(ports["metrics"])
        container = group["template"]["spec"]["containers"][0]
        assert _ports(container)["metrics"] == ports["metrics"]


def test_serve_command_parses_with_the_cli(cluster: dict[str, Any]) -> None:
    argv = _head_serve(cluster)
    args = parse_with_cli(argv)
    assert int(args.gateway_port) == int(flag_value(argv, GATEWAY_FLAG))


def test_containers_ports_resources_images(cluster: dict[str, Any]) -> None:
    groups = [cluster["spec"]["headGroupSpec"], *cluster["spec"]["workerGroupSpecs"]]
    images = set()
    for group in groups:
        pod = group["template"]["spec"]
        container = pod["containers"][0]
        images.add(container["image"])
        names = [p["name"] for p in container["ports"]]
        numbers = [p["containerPort"] for p in container["ports"]]
        assert len(set(names)) == len(names) and len(set(numbers)) == len(numbers)
        for port in container["ports"]:
            assert PORT_NAME.match(port["name"]), port
            assert 1 <= port["containerPort"] <= 65535
            assert port.get("protocol", "TCP") == "TCP"
        # Ray sizes itself from the limits; requests == limits gives the pod
        # the Guaranteed class, so the kubelet does not evict it first.
        resources = container["resources"]
        for key in ("cpu", "memory"):
            assert resources["requests"][key] == resources["limits"][key], (key, group)
        assert container["lifecycle"]["preStop"]["exec"]["command"][-1] == "ray stop"
    assert len(images) == 1, "head and workers must run the same image"
    for group in cluster["spec"]["workerGroupSpecs"]:
        assert 0 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]


def test_head_probes(cluster: dict[str, Any]) -> None:
    container = _head(cluster)
    ports = _ports(container)
    readiness = container["readinessProbe"]
    # Ready only once serve's gateway accepts connections.
    assert readiness["tcpSocket"]["port"] in ("gateway", ports["gateway"])
    liveness = container["livenessProbe"]
    assert liveness["httpGet"]["path"] == "/api/healthz"
    # Ray's health endpoint needs Ray's time to start: the liveness probe
    # allows more than the readiness probe before it restarts the pod.
    assert (
        liveness["periodSeconds"] * liveness["failureThreshold"]
        > readiness["periodSeconds"] * readiness["failureThreshold"]
    )


def test_gateway_service_selects_the_head_pod(
    cluster: dict[str, Any], service: dict[str, Any]
) -> None:
    assert service["apiVersion"] == "v1"
    selector = service["spec"]["selector"]
    assert selector == {CLUSTER_LABEL: cluster["metadata"]["name"], NODE_TYPE_LABEL: "head"}
    ports = _ports(_head(cluster))
    by_name = {p["name"]: p for p in service["spec"]["ports"]}
    assert set(by_name) == {"gateway", "metrics"}
    for name, port in by_name.items():
        assert port["targetPort"] == name
        assert port["port"] == ports[name]
    # KubeRay names its own head service <cluster>-head-svc; ours must not clash.
    assert service["metadata"]["name"] != f"{cluster['metadata']['name']}-head-svc"
