"""The GPU cluster file clusters/gpu.yaml: valid for Ray's cluster launcher, and safe.

Offline and fast: nothing here talks to a cloud, opens SSH or needs boto3. What
`ray up` does before it contacts AWS (fill in Ray's defaults, validate against
Ray's schema) is run for real; what it would do on AWS is checked against the
file (and, for the security group Ray creates, against Ray's installed source).
A real `ray up` needs AWS credentials and SSH and is not tested here.
"""

from __future__ import annotations

import ast
import copy
import ipaddress
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any, Iterator

import jsonschema
import pytest
import ray
import ray.autoscaler
import yaml

ROOT = Path(__file__).resolve().parents[1]
CLUSTER_FILE = ROOT / "clusters" / "gpu.yaml"
RAY_AUTOSCALER_DIR = Path(ray.autoscaler.__file__).resolve().parent

#: vCPUs and NVIDIA GPUs of the EC2 types this project is likely to use (AWS's
#: published specifications). Types not listed are only checked by family.
INSTANCE_SPECS: dict[str, tuple[int, int]] = {
    "m5.xlarge": (4, 0), "m5.2xlarge": (8, 0), "m5.4xlarge": (16, 0),
    "m6i.xlarge": (4, 0), "m6i.2xlarge": (8, 0), "m6i.4xlarge": (16, 0),
    "c5.2xlarge": (8, 0), "c6i.2xlarge": (8, 0), "r5.2xlarge": (8, 0),
    "g4dn.xlarge": (4, 1), "g4dn.2xlarge": (8, 1), "g4dn.4xlarge": (16, 1),
    "g4dn.12xlarge": (48, 4),
    "g5.xlarge": (4, 1), "g5.2xlarge": (8, 1), "g5.4xlarge": (16, 1), "g5.8xlarge": (32, 1),
    "g5.12xlarge": (48, 4), "g5.24xlarge": (96, 4), "g5.48xlarge": (192, 8),
    "g6.xlarge": (4, 1), "g6.2xlarge": (8, 1), "g6.4xlarge": (16, 1), "g6.12xlarge": (48, 4),
    "g6.48xlarge": (192, 8),
    "p3.2xlarge": (8, 1), "p3.8xlarge": (32, 4), "p4d.24xlarge": (96, 8), "p5.48xlarge": (192, 8),
}
#: Instance families that carry GPUs or other accelerators.
ACCELERATOR_FAMILY = re.compile(r"^(g\d|gr\d|p\d|dl\d|inf\d|trn\d|vt\d|f\d)", re.IGNORECASE)

#: Ports Ray listens on (GCS, object manager, dashboard, client server, the
#: default node-manager/worker range).
RAY_PORTS = (6379, 8076, 8265, 10001, 10002, 19999)

#: Key names that hold secrets. HttpTokens (IMDSv2) is an EC2 option, not a token.
SECRET_KEY_NAME = re.compile(
    r"secret|passw(or)?d|token|credential|api[_-]?key|access[_-]?key|private[_-]?key", re.IGNORECASE
)
ALLOWED_KEY_NAMES = {"HttpTokens"}
#: What secrets look like as values (anywhere in the file, comments included).
SECRET_VALUE = re.compile(
    r"(?:A3T[A-Z0-9]|AKIA|ASIA|AGPA|AIDA|AROA|ANPA|ANVA)[A-Z0-9]{16}"  # AWS access key ids
    r"|-----BEGIN [A-Z ]*PRIVATE KEY-----"
    r"|\bhf_[A-Za-z0-9]{30,}"  # Hugging Face tokens
    r"|\bgh[pousr]_[A-Za-z0-9]{36,}|\bgithub_pat_[A-Za-z0-9_]{20,}"
    r"|\bxox[abposr]-[A-Za-z0-9-]{10,}"
    r"|\bsk-[A-Za-z0-9]{20,}"
)
#: Environment variables that carry credentials: never set by the cluster file.
SECRET_ENV = re.compile(
    r"\b(AWS_ACCESS_KEY_ID|AWS_SECRET_ACCESS_KEY|AWS_SESSION_TOKEN|HF_TOKEN|HUGGING_FACE_HUB_TOKEN"
    r"|GITHUB_TOKEN|WANDB_API_KEY|GOOGLE_APPLICATION_CREDENTIALS|RAY_AUTH_TOKEN)\s*="
)
#: The one file mount from outside the repository: Ray's token, from where Ray keeps it on your
#: machine to where Ray looks for it on each node (Ray's own recipe for its cluster launcher up to
#: 2.60). Its key names a token file, whose content is never in the cluster file.
RAY_TOKEN_MOUNT = ("~/.ray/auth_token", "~/.ray/auth_token")
#: Local files that hold credentials: never a file mount source.
SENSITIVE_PATHS = (".aws", ".ssh", ".netrc", ".config/gcloud", ".docker", ".kube",
                   "huggingface/token", ".env")


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def text() -> str:
    return CLUSTER_FILE.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def config(text) -> dict[str, Any]:
    loaded = yaml.safe_load(text)
    assert isinstance(loaded, dict), f"{CLUSTER_FILE} is not a YAML mapping"
    return loaded


@pytest.fixture(scope="module")
def prepared(config) -> dict[str, Any]:
    """The config as `ray up` sees it after merging Ray's AWS defaults (offline)."""
    prepare_config, _ = _ray_config_api()
    return prepare_config(copy.deepcopy(config))


def _ray_config_api():
    """Ray's private prepare_config/validate_config, or a skip that says why."""
    try:
        from ray.autoscaler._private.util import prepare_config, validate_config
    except ImportError as exc:  # private API: it may move between Ray releases
        pytest.skip(f"ray.autoscaler._private.util.prepare_config/validate_config not importable "
                    f"in Ray {ray.__version__} ({exc}); the jsonschema check still runs")
    return prepare_config, validate_config


def _node_types(config) -> dict[str, dict[str, Any]]:
    return config["available_node_types"]


def _head(config) -> dict[str, Any]:
    return _node_types(config)[config["head_node_type"]]


def _workers(config) -> dict[str, dict[str, Any]]:
    return {name: t for name, t in _node_types(config).items() if name != config["head_node_type"]}


def _gpu_workers(config) -> dict[str, dict[str, Any]]:
    return {name: t for name, t in _workers(config).items()
            if t.get("resources", {}).get("GPU", 0) > 0}


def _commands(config, *fields: str) -> list[str]:
    fields = fields or ("initialization_commands", "setup_commands", "head_setup_commands",
                        "worker_setup_commands", "head_start_ray_commands",
                        "worker_start_ray_commands")
    out = [cmd for f in fields for cmd in config.get(f, [])]
    for node_type in _node_types(config).values():  # per-type overrides
        out += [cmd for f in ("initialization_commands", "worker_setup_commands") if f in fields
                for cmd in node_type.get(f, [])]
    return out


def _walk(node: Any, path: str = "") -> Iterator[tuple[str, Any, Any]]:
    """(path, key, value) for every mapping entry and (path, None, item) for list items."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield path, key, value
            yield from _walk(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, item in enumerate(node):
            yield path, None, item
            yield from _walk(item, f"{path}[{i}]")


def _local(path: str) -> str:
    """A file-mount source relative to the repository root, without "./"."""
    return path[2:] if path.startswith("./") else path


# --------------------------------------------------------------------------- Ray's schema


def test_valid_against_ray_schema_with_jsonschema(config):
    """Always runs: the file against the ray-schema.json shipped with the installed Ray."""
    schema_path = RAY_AUTOSCALER_DIR / "ray-schema.json"
    assert schema_path.is_file(), f"Ray {ray.__version__} has no {schema_path}; update this test"
    schema = json.loads(schema_path.read_text())
    validator_cls = jsonschema.validators.validator_for(schema)
    validator_cls.check_schema(schema)
    errors = sorted(validator_cls(schema).iter_errors(config), key=lambda e: list(e.absolute_path))
    assert not errors, "clusters/gpu.yaml violates Ray's schema:\n" + "\n".join(
        f"  {'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in errors)


def test_valid_for_ray_up(prepared):
    """What `ray up` runs before it contacts AWS: prepare_config, then validate_config."""
    _, validate_config = _ray_config_api()
    validate_config(prepared)  # raises on any problem


def test_ray_defaults_do_not_leak_in(config, prepared):
    # Ray merges its AWS defaults key by key at the top level: any command list
    # left out of the file would come from defaults.yaml (conda env, nightly wheel).
    for field in ("initialization_commands", "setup_commands", "head_setup_commands",
                  "worker_setup_commands", "head_start_ray_commands", "worker_start_ray_commands",
                  "file_mounts", "cluster_synced_files", "rsync_exclude", "rsync_filter"):
        assert field in config, f"{field} is not set: Ray's default would apply"
    merged = _commands(prepared)
    leaked = [c for c in merged if re.search(r"anaconda3|ray-wheels|tensorflow", c)]
    assert not leaked, f"commands from Ray's defaults.yaml: {leaked}"
    # After the merge, workers run the common setup too (they need the project).
    common = config["setup_commands"]
    assert prepared["worker_setup_commands"][: len(common)] == common
    assert prepared["head_setup_commands"][: len(common)] == common


def test_provider_is_aws_with_region(config):
    provider = config["provider"]
    assert provider["type"] == "aws"
    assert re.fullmatch(r"[a-z]{2}(-[a-z]+)+-\d", provider["region"]), provider["region"]
    for zone in provider.get("availability_zone", "").split(","):
        assert zone.startswith(provider["region"]), f"zone {zone} is not in {provider['region']}"


# --------------------------------------------------------------------------- node types


def test_head_has_no_gpu(config):
    head = _head(config)
    itype = head["node_config"]["InstanceType"]
    assert not ACCELERATOR_FAMILY.match(itype), f"head instance {itype} has accelerators"
    assert head["resources"].get("GPU") == 0, "declare GPU: 0 on the head: no model there"
    assert head.get("max_workers", 0) == 0 and head.get("min_workers", 0) == 0
    if itype in INSTANCE_SPECS:
        vcpus, _ = INSTANCE_SPECS[itype]
        assert 0 <= head["resources"].get("CPU", 0) <= vcpus


def test_gpu_worker_types_can_scale(config):
    gpu_types = _gpu_workers(config)
    assert gpu_types, "no worker type advertises a GPU"
    for name, node_type in gpu_types.items():
        assert node_type.get("min_workers", 0) == 0, f"{name}: idle GPUs cost money; min_workers 0"
        assert node_type.get("max_workers", 0) >= 1, f"{name}: max_workers must allow a node"
    assert config["max_workers"] >= 1
    assert sum(t.get("min_workers", 0) for t in _workers(config).values()) <= config["max_workers"]


def test_declared_resources_match_the_instances(config):
    for name, node_type in _node_types(config).items():
        itype = node_type["node_config"]["InstanceType"]
        res = node_type["resources"]
        assert set(res) >= {"CPU", "GPU"}, f"{name}: declare CPU and GPU explicitly"
        if ACCELERATOR_FAMILY.match(itype):
            assert res["GPU"] >= 1, f"{name}: {itype} has GPUs but declares none"
        if itype in INSTANCE_SPECS:
            vcpus, gpus = INSTANCE_SPECS[itype]
            assert res["GPU"] == gpus, f"{name}: {itype} has {gpus} GPU(s), declared {res['GPU']}"
            assert 1 <= res["CPU"] <= vcpus, \
                f"{name}: {itype} has {vcpus} vCPUs, declared {res['CPU']}"


def test_every_node_runs_the_same_image(config):
    # Ray needs the same Python (and Ray) on every node: one image for all.
    images = {t["node_config"].get("ImageId") for t in _node_types(config).values()}
    assert len(images) == 1, f"node types use different images: {images}"
    (image,) = images
    assert image and re.fullmatch(r"ami-[0-9a-f]{8,17}|resolve:ssm:/\S+", image), image


# --------------------------------------------------------------------------- safety


def test_no_credentials_in_the_file(text, config):
    match = SECRET_VALUE.search(text)
    assert match is None, f"something that looks like a secret: {match.group(0)[:12]}..."
    for path, key, value in _walk(config):
        if path == ".file_mounts" and (key, value) == RAY_TOKEN_MOUNT:
            continue
        if isinstance(key, str) and key not in ALLOWED_KEY_NAMES:
            assert not SECRET_KEY_NAME.search(key), f"secret-bearing key {path}.{key}"
        if isinstance(value, str):
            assert not SECRET_ENV.search(value), f"credential set in a command: {value[:60]}"
    # Ray creates the key pair; the file names no key and no credentials file.
    assert set(config.get("auth", {})) <= {"ssh_user"}, f"auth: {config['auth']}"
    assert "gcp_credentials" not in config["provider"]


def test_file_mounts_copy_only_the_project(config):
    for remote, local in config["file_mounts"].items():
        if (remote, local) == RAY_TOKEN_MOUNT:
            continue  # test_ray_token_authentication_on_every_node
        rel = _local(local)
        assert not Path(rel).is_absolute() and not rel.startswith("~"), \
            f"{remote}: {local} is outside the repository"
        assert rel not in ("", ".") and ".." not in Path(rel).parts, \
            f"{remote}: {local} would copy whatever folder `ray up` runs in"
        assert (ROOT / rel).exists(), f"{remote}: {local} does not exist in the repository"
        assert not any(s in rel for s in SENSITIVE_PATHS), f"{remote}: {local} holds credentials"
        assert remote.startswith("~/promptsweep/"), f"{remote}: the project lives in ~/promptsweep"
    for path in config.get("cluster_synced_files", []):
        assert not any(s in path for s in SENSITIVE_PATHS), path


def test_every_tracked_file_reaches_the_cluster(config):
    """The cluster gets the whole project (so results can record a clean git revision)."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    out = subprocess.run(["git", "-C", str(ROOT), "ls-files"], capture_output=True, text=True)
    if out.returncode != 0:
        pytest.skip(f"git ls-files failed: {out.stderr.strip()}")
    sources = [_local(local) for local in config["file_mounts"].values()]
    missing = sorted({f.split("/")[0] for f in out.stdout.splitlines()
                      if not any(f == s or f.startswith(s + "/") for s in sources)})
    assert not missing, f"tracked but not in file_mounts of clusters/gpu.yaml: {missing}"


def _cidrs(rule: dict[str, Any]) -> list[str]:
    return ([r["CidrIp"] for r in rule.get("IpRanges", [])]
            + [r["CidrIpv6"] for r in rule.get("Ipv6Ranges", [])])


def _port_range(rule: dict[str, Any]) -> tuple[int, int]:
    if str(rule.get("IpProtocol")) in ("-1", "all"):
        return (0, 65535)
    low, high = rule.get("FromPort", 0), rule.get("ToPort", 65535)
    return (0, 65535) if low in (-1, None) else (low, high)


def _is_ssh_only(rule: dict[str, Any]) -> bool:
    return str(rule.get("IpProtocol")) in ("tcp", "6") and _port_range(rule) == (22, 22)


def _check_inbound_rule(rule: dict[str, Any], where: str) -> None:
    assert not rule.get("PrefixListIds"), f"{where}: prefix lists cannot be checked offline"
    low, high = _port_range(rule)
    for cidr in _cidrs(rule):
        net = ipaddress.ip_network(cidr, strict=False)
        if not net.is_private:
            assert _is_ssh_only(rule), \
                f"{where}: ports {low}-{high} open to {cidr}; only SSH (22) may be"
    for port in RAY_PORTS:
        if low <= port <= high:
            assert all(ipaddress.ip_network(c, strict=False).is_private for c in _cidrs(rule)), \
                f"{where}: Ray port {port} reachable from outside the VPC"


def test_security_group_opens_only_ssh_to_the_internet(config):
    provider = config["provider"]
    group = provider.get("security_group", {})
    assert group.get("GroupName"), "name the security group so Ray creates a fresh one"
    assert group["GroupName"] != "default"
    for i, rule in enumerate(group.get("IpPermissions", [])):
        _check_inbound_rule(rule, f"provider.security_group.IpPermissions[{i}]")
    # Groups or templates of one's own bypass the group above; review them first.
    for name, node_type in _node_types(config).items():
        for key in ("SecurityGroupIds", "NetworkInterfaces", "LaunchTemplate"):
            assert key not in node_type["node_config"], \
                f"{name}.node_config.{key}: review its inbound rules, then update this test"


def _ray_aws_config_source() -> ast.Module:
    source = RAY_AUTOSCALER_DIR / "_private" / "aws" / "config.py"
    if not source.is_file():
        pytest.skip(f"Ray {ray.__version__} moved its AWS config module ({source})")
    return ast.parse(source.read_text())


def _function(tree: ast.Module, name: str) -> ast.FunctionDef:
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == name:
            return node
    pytest.skip(f"Ray {ray.__version__} has no {name} (private code moved): "
                "review the rules of the security group Ray creates")


def test_rays_own_security_group_rules_open_only_ssh():
    """The rules Ray adds to the group it creates, read from the installed Ray (boto3-free).

    Ray's module imports boto3 at import time, so its functions are read, not called.
    """
    tree = _ray_aws_config_source()
    ssh = _function(tree, "_create_default_ssh_inbound_rules")
    (ret,) = [n for n in ssh.body if isinstance(n, ast.Return)]
    for i, rule in enumerate(ast.literal_eval(ret.value)):
        _check_inbound_rule(rule, f"Ray's default SSH rule {i}")
        assert _is_ssh_only(rule)
    intra = _function(tree, "_create_default_intracluster_inbound_rules")
    (ret,) = [n for n in intra.body if isinstance(n, ast.Return)]
    assert isinstance(ret.value, ast.List)
    for rule in ret.value.elts:
        assert isinstance(rule, ast.Dict)
        keys = {k.value for k in rule.keys if isinstance(k, ast.Constant)}
        assert "UserIdGroupPairs" in keys, "Ray's intra-cluster rule no longer references the group"
        assert not keys & {"IpRanges", "Ipv6Ranges", "PrefixListIds"}, \
            f"Ray's intra-cluster rule: {keys}"
    merged = _function(tree, "_create_default_inbound_rules")
    called = {n.func.id for n in ast.walk(merged)
              if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
    assert {"_create_default_intracluster_inbound_rules",
            "_create_default_ssh_inbound_rules"} <= called


def test_ray_token_authentication_on_every_node(config):
    """Ray's ports are reachable inside the cluster's security group only, and still nothing
    without the token may use them: RAY_AUTH_MODE=token before every `ray start`, for the
    driver's shell too, with the same token on every node (file_mounts, which the head copies
    on to each worker it launches)."""
    remote, local = RAY_TOKEN_MOUNT
    assert config["file_mounts"].get(remote) == local, "the token does not reach the nodes"
    for field in ("head_start_ray_commands", "worker_start_ray_commands"):
        starts = [c for c in config[field] if re.search(r"\bray start\b", c)]
        assert starts, field
        for cmd in starts:
            assert re.search(r"\bRAY_AUTH_MODE=token\b[^;&|]*\bray start\b", cmd), \
                f"{field}: RAY_AUTH_MODE=token is not set for `ray start`: {cmd}"
    setup = config["setup_commands"]
    assert any(re.fullmatch(r"test -s ~/\.ray/auth_token && chmod 600 ~/\.ray/auth_token", c)
               for c in setup), "a node without its token must fail setup; the token 0600"
    shell = [c for c in setup if ".promptsweep_env" in c and "export" in c]
    assert shell and all(re.search(r"'export [^']*\bRAY_AUTH_MODE=token\b", c) for c in shell), \
        "the driver's shell (ray exec, ray attach) must join with RAY_AUTH_MODE=token"
    for cmd in _commands(config):
        for mode in re.findall(r"\bRAY_AUTH_MODE=(\w+)", cmd):
            assert mode == "token", cmd


def test_dashboard_and_ray_ports_are_not_exposed(config):
    head_start = " ".join(config["head_start_ray_commands"])
    assert re.search(r"--dashboard-host[= ](127\.0\.0\.1|localhost)\b", head_start), \
        "bind the dashboard to 127.0.0.1 (reach it with `ray dashboard clusters/gpu.yaml`)"
    for cmd in _commands(config):
        assert "0.0.0.0" not in cmd, f"a command binds to every interface: {cmd}"
    assert "--autoscaling-config=~/ray_bootstrap_config.yaml" in head_start, \
        "the head must start the autoscaler"
    worker_starts = [c for c in config["worker_start_ray_commands"] if " start " in c]
    assert worker_starts and all("$RAY_HEAD_IP:6379" in c for c in worker_starts)


# --------------------------------------------------------------------------- software on the nodes


def test_setup_installs_the_project(config):
    mounts = {_local(local): remote for remote, local in config["file_mounts"].items()}
    for needed in ("pyproject.toml", "README.md", "sweep", "methods", "sweeps"):
        assert needed in mounts, f"{needed} is not copied to the nodes"
    setup = config["setup_commands"]
    installs = [c for c in setup if re.search(r"pip install .*-e ~/promptsweep(\s|$)", c)]
    assert installs, "setup_commands do not `pip install -e ~/promptsweep`"
    venv = re.search(r"(~/\S+)/bin/python -m pip install", installs[0]).group(1)
    assert any(f"-m venv {venv}" in c for c in setup), f"the venv {venv} is never created"
    for cmd in config["head_start_ray_commands"] + config["worker_start_ray_commands"]:
        assert f"{venv}/bin/ray" in cmd, f"Ray is not started from the project's venv: {cmd}"
    assert any("boto3" in c for c in config["head_setup_commands"]), \
        "the autoscaler on the head needs boto3"


def test_cluster_ray_version_matches_the_launcher(config):
    pins = {m.group(1) for c in config["setup_commands"]
            for m in re.finditer(r"\bray\[[^\]]*\]==([0-9][0-9A-Za-z.]*)", c)}
    assert len(pins) == 1, f"pin exactly one Ray version in setup_commands, found {pins}"
    assert pins == {ray.__version__}, (
        f"clusters/gpu.yaml installs Ray {pins.pop()} on the nodes but this machine runs Ray "
        f"{ray.__version__}: update the pin (the launcher and the cluster should agree)")


def test_hugging_face_is_offline_for_the_sweep(config):
    for field in ("head_start_ray_commands", "worker_start_ray_commands"):
        starts = [c for c in config[field] if " start " in c]
        assert starts and all(re.search(r"\bHF_HUB_OFFLINE=1\b", c) for c in starts), \
            f"{field}: Ray's worker processes must inherit HF_HUB_OFFLINE=1"
    shell = [c for c in config["setup_commands"] if "HF_HUB_OFFLINE=1" in c and ".bashrc" in c]
    assert shell, "the driver's shell (ray attach) must have HF_HUB_OFFLINE=1 too"
    for cmd in _commands(config):
        assert not re.search(r"HF_HUB_OFFLINE=(0|false|no)\b", cmd, re.IGNORECASE), cmd


def test_data_and_weights_reach_every_node(config):
    synced = set(config["cluster_synced_files"])
    for folder in ("coop", "weights", "hf"):
        assert f"~/data/{folder}" in synced, f"~/data/{folder} is not copied to new workers"
    setup = " ".join(config["setup_commands"])
    assert 'ln -s "$HOME/data" /data' in setup, "/data must point at ~/data on every node"
    starts = " ".join(config["head_start_ray_commands"] + config["worker_start_ray_commands"])
    assert "HF_HOME=/data/hf" in starts and "HF_HOME=/data/hf" in setup
