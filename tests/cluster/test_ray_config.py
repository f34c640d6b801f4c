"""ray_config.yaml must pass Ray's own cluster-launcher validation.

Uses the same steps ``ray up`` runs before talking to the cloud provider
(``prepare_config``: merge with the provider defaults, merge setup commands,
check docker and per-type worker limits; then ``validate_config``: JSON schema
plus cross-field checks). No Ray runtime and no cloud access are needed.

Beyond the schema, the checks here tie the pieces together: the head runs
``ray-realtime serve`` with a gateway and a metrics port, every node exports
metrics on that port, the security group opens those two (and nothing of
Ray's own to the outside), and the header's port table says the same.
"""

from __future__ import annotations

import argparse
import ast
import copy
import importlib.util
import ipaddress
import re
import shlex
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import ray
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

CONFIG_PATH = Path(__file__).resolve().parents[2] / "ray_config.yaml"

# Flags of `ray-realtime serve` that deployments rely on (issue 13 items 1 and 6).
GATEWAY_FLAG = "--gateway-port"
METRICS_FLAG = "--metrics-export-port"
# Linux's default net.ipv4.ip_local_port_range: where the data plane's
# ephemeral ports come from.
EPHEMERAL_PORTS = (32768, 60999)


def serve_argv(command: str) -> list[str]:
    """The arguments after ``ray-realtime serve`` in a shell command line."""
    tokens = shlex.split(command)
    for i in range(len(tokens) - 1):
        if tokens[i] == "ray-realtime" and tokens[i + 1] == "serve":
            argv: list[str] = []
            for token in tokens[i + 2 :]:
                if token[:1] in (">", "<", "&", ";", "|") or token == "2>&1":
                    break
                argv.append(token)
            return argv
    raise AssertionError(f"no `ray-realtime serve` in {command!r}")


def flag_value(argv: list[str], flag: str) -> str:
    """The value of ``--flag V`` or ``--flag=V`` in ``argv`` (exactly once)."""
    values = [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == flag]
    values += [a.split("=", 1)[1] for a in argv if a.startswith(flag + "=")]
    assert len(values) == 1, f"{flag} given {len(values)} times in {argv}"
    return values[0]


def parse_with_cli(argv: list[str]) -> argparse.Namespace:
    """Parse ``serve`` arguments with the project's own CLI parser.

    Skips while the CLI does not have the gateway/metrics flags yet (they are
    added by issue 13 item 1 in parallel); any other unknown argument fails.
    """
    from ray_realtime.cli import build_parser

    args, unknown = build_parser().parse_known_args(["serve", *argv])
    missing = [f for f in (GATEWAY_FLAG, METRICS_FLAG) if f in unknown]
    if missing:
        pytest.skip(f"`ray-realtime serve` has no {', '.join(missing)} yet")
    assert not unknown, f"`ray-realtime serve` does not accept {unknown}"
    return args


def ray_default_amis() -> dict[str, str]:
    """Ray's table of per-region AMIs behind ``ImageId: latest_dlami``.

    Read from the installed Ray's source rather than imported: the module
    imports boto3, which only the laptop running ``ray up`` needs.
    """
    spec = importlib.util.find_spec("ray.autoscaler._private.aws.config")
    assert spec is not None and spec.origin is not None
    tree = ast.parse(Path(spec.origin).read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "DEFAULT_AMI" for t in node.targets
        ):
            table = ast.literal_eval(node.value)
            assert isinstance(table, dict)
            return table
    raise AssertionError("DEFAULT_AMI not found in Ray's AWS config module")


@pytest.fixture(scope="module")
def raw_text() -> str:
    return CONFIG_PATH.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def raw(raw_text: str) -> dict[str, Any]:
    loaded = yaml.safe_load(raw_text)
    assert isinstance(loaded, dict)
    return loaded


@pytest.fixture(scope="module")
def prepared(raw: dict[str, Any]) -> dict[str, Any]:
    config = prepare_config(copy.deepcopy(raw))
    validate_config(config)
    return config


def test_validates_with_rays_validator(prepared: dict[str, Any]) -> None:
    assert prepared["cluster_name"] == "ray-realtime"
    assert prepared["provider"]["type"] == "aws"


def test_validator_is_not_a_rubber_stamp(raw: dict[str, Any]) -> None:
    broken = copy.deepcopy(raw)
    worker_type = next(iter(set(broken["available_node_types"]) - {broken["head_node_type"]}))
    broken["available_node_types"][worker_type]["not_a_field"] = 1
    with pytest.raises(jsonschema.ValidationError):
        validate_config(prepare_config(broken))

    missing_head = copy.deepcopy(raw)
    missing_head["head_node_type"] = "no.such.type"
    with pytest.raises(ValueError, match="head_node_type"):
        validate_config(prepare_config(missing_head))


def test_head_and_worker_node_types(prepared: dict[str, Any]) -> None:
    node_types = prepared["available_node_types"]
    head = prepared["head_node_type"]
    assert head in node_types
    assert node_types[head]["max_workers"] == 0
    workers = {name: t for name, t in node_types.items() if name != head}
    assert workers, "a worker node type is required"
    for name, node_type in workers.items():
        assert 0 <= node_type["min_workers"] <= node_type["max_workers"], name
        assert node_type["max_workers"] >= 1, name
        assert node_type["max_workers"] <= prepared["max_workers"], name
        assert node_type["node_config"].get("InstanceType"), name


def test_setup_installs_ray_realtime_on_every_node(prepared: dict[str, Any]) -> None:
    # prepare_config prepends setup_commands to head/worker setup commands.
    for key in ("head_setup_commands", "worker_setup_commands"):
        installs = [c for c in prepared[key] if re.search(r"pip install .*ray-realtime", c)]
        assert installs, f"{key} does not install ray-realtime"


def test_head_starts_ray_then_serve_in_background(prepared: dict[str, Any]) -> None:
    commands: list[str] = prepared["head_start_ray_commands"]
    ray_start = next(i for i, c in enumerate(commands) if "ray start --head" in c)
    serve = next(i for i, c in enumerate(commands) if "ray-realtime serve" in c)
    assert ray_start < serve
    serve_cmd = commands[serve]
    assert "--address auto" in serve_cmd
    assert re.search(r">\s*\S+\.log\s+2>&1", serve_cmd), "serve output must go to a log file"
    assert re.search(r"&(\s|$)", serve_cmd.replace("2>&1", "")), "serve must run in background"


def test_workers_join_the_head(prepared: dict[str, Any]) -> None:
    commands: list[str] = prepared["worker_start_ray_commands"]
    assert any("ray start --address=$RAY_HEAD_IP:6379" in c for c in commands)


def test_ray_version_matches_installed(raw: dict[str, Any]) -> None:
    # `ray up` requires the cluster to run the same Ray version as the laptop.
    version = ray.__version__
    assert raw["docker"]["image"].startswith(f"rayproject/ray:{version}"), (
        f"bump the docker image in ray_config.yaml to Ray {version}"
    )
    pins = [c for c in raw["setup_commands"] if "ray[default]==" in c]
    assert pins and all(f"ray[default]=={version}" in c for c in pins)


def test_commands_are_documented_and_no_placeholder_is_left(raw_text: str) -> None:
    header = raw_text.split("\ncluster_name:", 1)[0]
    for needle in (
        "ray up ray_config.yaml",
        "ray attach ray_config.yaml",
        "ray down ray_config.yaml",
        "docs/deploy.md",
    ):
        assert needle in header, needle
    # Only credentials are left to fill in, and they are not in the file.
    body = raw_text.split("\ncluster_name:", 1)[1]
    assert not re.search(r"YOUR_|<[a-z]", body), "a placeholder is left in ray_config.yaml"


def test_installs_this_checkout(raw: dict[str, Any]) -> None:
    mounts = raw["file_mounts"]
    target = next(remote for remote, local in mounts.items() if local == ".")
    assert target.startswith("~/")
    path = re.escape(target[2:])
    install = rf'^pip install "?(~|\$HOME)/{path}(\[[a-z,]+\])?"?$'
    assert any(re.match(install, c) for c in raw["setup_commands"]), install
    assert any(".git" in pattern for pattern in raw["rsync_exclude"])


def test_image_pins_python_311_and_ami_exists_for_region(raw: dict[str, Any]) -> None:
    assert raw["docker"]["image"].endswith("-py311")
    amis = ray_default_amis()
    assert raw["provider"]["region"] in amis, "Ray has no default AMI for this region"
    for name, node_type in raw["available_node_types"].items():
        assert node_type["node_config"]["ImageId"] == "latest_dlami", name


def _head_serve(prepared: dict[str, Any]) -> list[str]:
    commands: list[str] = prepared["head_start_ray_commands"]
    return serve_argv(next(c for c in commands if "ray-realtime serve" in c))


def test_head_runs_serve_with_gateway_and_metrics_ports(prepared: dict[str, Any]) -> None:
    argv = _head_serve(prepared)
    assert flag_value(argv, "--address") == "auto"
    gateway = int(flag_value(argv, GATEWAY_FLAG))
    metrics = int(flag_value(argv, METRICS_FLAG))
    reserved = {6379, 8076, 8265, 10001}
    assert len({gateway, metrics} | reserved) == len(reserved) + 2, "ports collide"
    assert not EPHEMERAL_PORTS[0] <= gateway <= EPHEMERAL_PORTS[1]
    assert not EPHEMERAL_PORTS[0] <= metrics <= EPHEMERAL_PORTS[1]

    # Ray's metrics agent on every node exports on the same port serve names.
    head_start = next(c for c in prepared["head_start_ray_commands"] if "ray start --head" in c)
    worker_start = next(c for c in prepared["worker_start_ray_commands"] if "ray start" in c)
    for command in (head_start, worker_start):
        assert f"--metrics-export-port={metrics}" in command, command
    # The dashboard (job API, no auth) stays on the head's loopback.
    assert "--dashboard-host=127.0.0.1" in head_start


def test_serve_command_parses_with_the_cli(prepared: dict[str, Any]) -> None:
    argv = _head_serve(prepared)
    args = parse_with_cli(argv)
    assert args.address == "auto"
    assert int(args.gateway_port) == int(flag_value(argv, GATEWAY_FLAG))
    assert int(args.metrics_export_port) == int(flag_value(argv, METRICS_FLAG))


def _rule_covers(rule: dict[str, Any], port: int) -> bool:
    return bool(
        rule.get("IpProtocol") in ("tcp", "6", "-1") and rule["FromPort"] <= port <= rule["ToPort"]
    )


def test_security_group_opens_gateway_and_metrics_only(prepared: dict[str, Any]) -> None:
    argv = _head_serve(prepared)
    gateway = int(flag_value(argv, GATEWAY_FLAG))
    metrics = int(flag_value(argv, METRICS_FLAG))
    rules: list[dict[str, Any]] = prepared["provider"]["security_group"]["IpPermissions"]
    for port in (gateway, metrics):
        assert any(_rule_covers(r, port) for r in rules), f"port {port} is not opened"
    for rule in rules:
        assert rule["IpProtocol"] == "tcp", rule
        covered = set(range(rule["FromPort"], rule["ToPort"] + 1))
        assert covered <= {gateway, metrics}, f"rule opens more than the service's ports: {rule}"
        for ip_range in rule["IpRanges"]:
            network = ipaddress.ip_network(ip_range["CidrIp"])
            assert network.is_private, f"{network} is not a private network"
            assert ip_range.get("Description")
    # Ray creates the group (with its members-reach-members-on-every-port rule,
    # which the data plane's ephemeral ports rely on) only when no node type
    # names its own groups.
    for name, node_type in prepared["available_node_types"].items():
        assert "SecurityGroupIds" not in node_type["node_config"], name


def test_header_port_table_matches_the_config(raw_text: str, prepared: dict[str, Any]) -> None:
    header = raw_text.split("\ncluster_name:", 1)[0]
    table = header[header.index("# Ports") :]
    argv = _head_serve(prepared)
    documented = {int(m) for m in re.findall(r"^#\s+(\d+)\s", table, flags=re.MULTILINE)}
    expected = {
        22,
        6379,
        8076,
        8265,
        10001,
        int(flag_value(argv, GATEWAY_FLAG)),
        int(flag_value(argv, METRICS_FLAG)),
    }
    assert documented == expected
    assert "{}-{}".format(*EPHEMERAL_PORTS) in table, "the data plane's port range"
    group = prepared["provider"]["security_group"]["GroupName"]
    assert f"`{group}`" in header


def test_deploy_doc_matches_the_config(prepared: dict[str, Any]) -> None:
    doc = (CONFIG_PATH.parent / "docs" / "deploy.md").read_text(encoding="utf-8")
    command = "ray-realtime serve " + " ".join(_head_serve(prepared))
    assert command in doc, "docs/deploy.md must show the head's serve command"
    for needle in (
        "ray up ray_config.yaml",
        "kubectl apply -f deploy/kuberay.yaml",
        "RAY_ADDRESS",
        "redis://",
        "docs/security.md",
        "{}-{}".format(*EPHEMERAL_PORTS),
        f"`{prepared['provider']['security_group']['GroupName']}`",
    ):
        assert needle in doc, needle
