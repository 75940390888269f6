"""clusters/slurm.sh and clusters/rayjob.yaml, offline: no Slurm, no Kubernetes, no Ray started.

The Slurm script runs under bash with stand-ins for srun, scontrol, hostname,
sleep, ray and python, first on PATH, that log each call (argv, the node it
runs on, the environment that matters) and play their part: srun runs its
command "on" the node it names, scontrol lists the job's hosts, ``ray status``
answers once a head has started, and the script's wait for the nodes returns
once every node has run ``ray start``. The KubeRay manifest is read with PyYAML
and checked against the repository, the README and KubeRay's field names.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import ray
import yaml

ROOT = Path(__file__).resolve().parents[1]
SLURM = ROOT / "clusters" / "slurm.sh"
RAYJOB = ROOT / "clusters" / "rayjob.yaml"
STORAGE = ROOT / "clusters" / "storage.yaml"
CLUSTERS_README = ROOT / "clusters" / "README.md"
SPEC = "sweeps/coop16.toml"
PORT = "6390"

# --------------------------------------------------------------------------- Slurm stand-ins

STUB = r'''#!{python}
"""A stand-in for {name}: appends its call to $STUB_LOG as one JSON line."""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

NAME = {name!r}
LOG = Path(os.environ["STUB_LOG"])
ENV = ("HF_HUB_OFFLINE", "HF_HOME", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "PATH")
HOSTS = os.environ["STUB_HOSTS"].split()
NODE = os.environ.get("STUB_NODE")  # None: the batch step (the first node)
VALUED = {{"-w", "--nodelist", "-N", "--nodes", "-n", "--ntasks", "-c", "--cpus-per-task",
          "--gpus-per-task", "--export"}}


def entries():
    out = []
    for line in LOG.read_text().splitlines() if LOG.exists() else []:
        try:
            out.append(json.loads(line))
        except ValueError:  # a line being written
            pass
    return out


def ray_starts(head):
    return [e for e in entries() if e["prog"] == "ray" and e["argv"][:1] == ["start"]
            and ("--head" in e["argv"]) == head]


def wait_for(condition, seconds):
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def log(**extra):
    record = {{"prog": NAME, "path": sys.argv[0], "argv": sys.argv[1:], "node": NODE,
              "env": {{k: os.environ.get(k) for k in ENV}}, **extra}}
    with open(LOG, "a") as f:
        f.write(json.dumps(record) + "\n")


args = sys.argv[1:]
if NAME == "scontrol":
    log()
    if args[:2] == ["show", "hostnames"]:
        print("\n".join(HOSTS))
elif NAME == "srun":
    log()
    node, i = None, 0
    while i < len(args) and args[i].startswith("-"):
        key, eq, value = args[i].partition("=")
        if not eq and key in VALUED:
            i += 1
            value = args[i]
        if key in ("-w", "--nodelist"):
            node = value
        i += 1
    if node is None or node not in HOSTS:
        sys.exit(f"srun stand-in: no node of the job named in {{args}}")
    sys.exit(subprocess.run(args[i:], env={{**os.environ, "STUB_NODE": node}}).returncode)
elif NAME == "hostname":
    log()
    if "--ip-address" in args or "-i" in args:
        print(json.loads(os.environ["STUB_IPS"])[NODE or HOSTS[0]])
    else:
        print(NODE or HOSTS[0])
elif NAME == "sleep":
    log()
elif NAME == "ray":
    head_up = LOG.with_name("head-up")
    if args[:1] == ["status"]:
        # Answers once the head is up; logged when it returns.
        up = not os.environ.get("STUB_HEAD_DOWN") and wait_for(head_up.exists, 5)
        log(answered=up)
        sys.exit(0 if up else 1)
    # A worker records whether the head was up when it started.
    log(head_started=head_up.exists())
    if "--head" in args and not os.environ.get("STUB_HEAD_DOWN"):
        time.sleep(1)  # a head takes a while to come up: a worker started too early sees none
        head_up.touch()
elif NAME == "python":
    if args[:1] == ["-"]:
        script = sys.stdin.read()
        if os.environ.get("STUB_JOIN_FAIL"):
            log(stdin=script)
            sys.exit("error: 1 of 2 Ray nodes joined within 600 s")
        joined = wait_for(lambda: len(ray_starts(True)) + len(ray_starts(False)) >= len(HOSTS), 10)
        log(stdin=script)  # written once every node has started Ray, like the real wait
        sys.exit(0 if joined else 1)
    log()
    sys.exit(int(os.environ.get("STUB_SWEEP_RC", "0")))
'''


def sbatch_directives() -> dict[str, str]:
    """The script's #SBATCH options (only those before its first command count)."""
    options = {}
    for line in SLURM.read_text().splitlines()[1:]:
        if not line.strip() or (line.startswith("#") and not line.startswith("#SBATCH")):
            continue
        if not line.startswith("#SBATCH"):
            break
        key, _, value = line.removeprefix("#SBATCH").strip().partition("=")
        options[key.lstrip("-")] = value
    return options


class SlurmRun:
    """One run of clusters/slurm.sh under the stand-ins, with its log of calls."""

    def __init__(self, tmp_path: Path, hosts: tuple[str, ...], args: tuple[str, ...],
                 ips: dict[str, str] | None = None, **env: str) -> None:
        bin_dir, self.venv = tmp_path / "bin", tmp_path / "venv"
        (self.venv / "bin").mkdir(parents=True)
        bin_dir.mkdir()
        for folder, names in ((bin_dir, ("srun", "scontrol", "hostname", "sleep")),
                              (self.venv / "bin", ("ray", "python"))):
            for name in names:
                path = folder / name
                path.write_text(STUB.format(python=sys.executable, name=name))
                path.chmod(0o755)
        self.data = tmp_path / "coop"
        self.data.mkdir()
        self.log_path = tmp_path / "calls.jsonl"
        self.hosts = hosts
        self.ips = ips or {h: f"10.20.0.{i + 1}" for i, h in enumerate(hosts)}
        self.ips.setdefault(hosts[0], "fe80::1%eth0 10.20.0.1")  # IPv6 first, as on many nodes
        self.head_ip = "10.20.0.1"
        sbatch = sbatch_directives()
        self.cpus, self.gpus = sbatch["cpus-per-task"], sbatch["gpus-per-task"]
        self.hf_home = str(tmp_path / "hf")
        base = {
            "PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(tmp_path), "LANG": "C.UTF-8",
            "STUB_LOG": str(self.log_path), "STUB_HOSTS": " ".join(hosts),
            "STUB_IPS": json.dumps(self.ips),
            # What sbatch sets for the job of the script's directives.
            "SLURM_JOB_ID": "4242", "SLURM_JOB_NAME": sbatch["job-name"],
            "SLURM_JOB_NODELIST": ",".join(hosts),  # a host list that scontrol expands
            "SLURM_JOB_NUM_NODES": str(len(hosts)), "SLURM_NNODES": str(len(hosts)),
            "SLURM_NTASKS": str(len(hosts)), "SLURM_NTASKS_PER_NODE": "1",
            "SLURM_CPUS_PER_TASK": self.cpus, "SLURM_GPUS_PER_TASK": self.gpus,
            "SLURM_SUBMIT_DIR": str(ROOT), "SLURM_SUBMIT_HOST": "login1",
            "PROMPTSWEEP_VENV": str(self.venv), "PROMPTSWEEP_DATA": str(self.data),
            "HF_HOME": self.hf_home, "HF_HUB_OFFLINE": "0", "RAY_PORT": PORT,
        }
        self.proc = subprocess.run(["bash", str(SLURM), *args], cwd=ROOT, env={**base, **env},
                                   check=False, capture_output=True, text=True, timeout=120)
        self.returncode, self.output = self.proc.returncode, self.proc.stdout + self.proc.stderr
        self.calls = ([json.loads(line) for line in self.log_path.read_text().splitlines()]
                      if self.log_path.exists() else [])

    def index(self, entry: dict[str, Any]) -> int:
        return self.calls.index(entry)

    def of(self, prog: str) -> list[dict[str, Any]]:
        return [c for c in self.calls if c["prog"] == prog]

    def ray_starts(self, head: bool) -> list[dict[str, Any]]:
        return [c for c in self.of("ray")
                if c["argv"][:1] == ["start"] and ("--head" in c["argv"]) == head]

    def sweeps(self) -> list[dict[str, Any]]:
        return [c for c in self.of("python") if c["argv"][:2] == ["-m", "sweep.launch"]]

    def waits(self) -> list[dict[str, Any]]:
        return [c for c in self.of("python") if c["argv"][:1] == ["-"]]

    def srun_of(self, call: dict[str, Any]) -> dict[str, Any]:
        """The srun call that ran ``call``: its argv ends with the command's, on its node."""
        command = [call["prog"], *call["argv"]]
        found = [s for s in self.of("srun") if s["argv"][-len(command):] == command
                 and (option(s["argv"], "--nodelist") or option(s["argv"], "-w")) == call["node"]]
        assert len(found) == 1, f"{command} was not run by exactly one srun: {found}"
        return found[0]


def option(argv: list[str], name: str) -> str | None:
    """The value of ``--name=value`` or ``--name value`` in argv; "" for a flag; None if absent."""
    for i, arg in enumerate(argv):
        if arg == name:
            nxt = argv[i + 1] if i + 1 < len(argv) else ""
            return "" if nxt.startswith("-") else nxt
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


HOSTS3 = ("gpu-a01", "gpu-a02", "gpu-b07")

# --------------------------------------------------------------------------- Slurm


def test_slurm_script_is_valid_bash():
    out = subprocess.run(["bash", "-n", str(SLURM)], check=False, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed")
def test_slurm_script_passes_shellcheck():
    out = subprocess.run(["shellcheck", str(SLURM)], check=False, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout


def test_sbatch_directives():
    sbatch = sbatch_directives()
    # sbatch ignores #SBATCH lines after the first command: all of them must be read.
    assert len(sbatch) == SLURM.read_text().count("\n#SBATCH"), "an #SBATCH line after a command"
    assert int(sbatch["nodes"]) >= 1
    assert sbatch["ntasks-per-node"] == "1", "Ray's pattern: one task per node"
    assert int(sbatch["gpus-per-task"]) >= 1 and int(sbatch["cpus-per-task"]) >= 1
    assert re.fullmatch(r"(\d+-)?\d+:\d\d:\d\d", sbatch["time"]), sbatch["time"]
    # Enough GPUs for the oracle actors of the spec the README submits.
    from sweep.spec import load_spec

    spec = load_spec(ROOT / SPEC, check_paths=False)
    gpus = int(sbatch["nodes"]) * int(sbatch["gpus-per-task"])
    assert gpus >= spec.resources.actors * spec.resources.gpus_per_actor


@pytest.mark.parametrize("hosts", [HOSTS3[:2], HOSTS3], ids=["2-nodes", "3-nodes"])
def test_slurm_starts_the_head_then_the_workers_then_the_sweep(tmp_path, hosts):
    run = SlurmRun(tmp_path, hosts, (SPEC, "--resume"))
    assert run.returncode == 0, run.output
    assert [c["argv"] for c in run.of("scontrol")] == [["show", "hostnames", ",".join(hosts)]]
    (head,) = run.ray_starts(head=True)
    workers = run.ray_starts(head=False)
    (wait,) = run.waits()
    (sweep,) = run.sweeps()

    # Where: the head on the first node, one worker on each other node, all through srun.
    assert head["node"] == hosts[0]
    assert sorted(w["node"] for w in workers) == sorted(hosts[1:])
    # When: the head, then (once it answers) the workers, then the sweep once all joined.
    answers = [run.index(c) for c in run.of("ray") if c["argv"][:1] == ["status"] and c["answered"]]
    assert answers and run.index(head) < min(answers)
    assert all(w["head_started"] for w in workers), "a worker started before the head was up"
    assert all(run.index(w) > min(answers) for w in workers), "workers did not wait for the head"
    assert run.index(sweep) > max(run.index(c) for c in [head, *workers, wait])
    assert wait["argv"][1:3] == [f"{run.head_ip}:{PORT}", str(len(hosts))]
    compile(wait["stdin"], "the wait for the nodes", "exec")

    # The head: its first IPv4 address, the port, the task's CPUs and GPUs, blocking.
    argv = head["argv"]
    assert option(argv, "--node-ip-address") == run.head_ip
    assert option(argv, "--port") == PORT
    assert option(argv, "--num-gpus") == run.gpus and option(argv, "--num-cpus") == run.cpus
    assert option(argv, "--block") == ""
    assert option(argv, "--dashboard-host") in (None, "127.0.0.1", "localhost")
    for worker in workers:
        argv = worker["argv"]
        assert option(argv, "--address") == f"{run.head_ip}:{PORT}"
        assert option(argv, "--num-gpus") == run.gpus and option(argv, "--num-cpus") == run.cpus
        assert option(argv, "--block") == ""
    for start in [head, *workers]:
        srun = run.srun_of(start)["argv"]
        assert option(srun, "--nodes") == "1" and option(srun, "--ntasks") == "1"
        assert (option(srun, "--nodelist") or option(srun, "-w")) == start["node"]
        assert option(srun, "--gpus-per-task") == run.gpus
        assert option(srun, "--cpus-per-task") == run.cpus

    # The sweep: in the batch step, from the venv, joining the head, options passed on.
    assert sweep["node"] is None
    assert Path(sweep["path"]).parent == run.venv / "bin"
    assert Path(head["path"]).parent == run.venv / "bin"
    assert sweep["argv"] == ["-m", "sweep.launch", SPEC, "--address", f"{run.head_ip}:{PORT}",
                             "--resume"]

    # The environment of every Ray process and of the driver.
    token = head["env"]["RAY_AUTH_TOKEN"]
    assert re.fullmatch(r"[0-9a-f]{64}", token or ""), "no token of 256 bits"
    assert token not in run.output, "the token was printed"
    for call in [head, *workers, wait, sweep]:
        env = call["env"]
        assert env["HF_HUB_OFFLINE"] == "1" and env["HF_HOME"] == run.hf_home
        assert env["RAY_AUTH_MODE"] == "token" and env["RAY_AUTH_TOKEN"] == token
        assert env["PATH"].split(":")[0] == str(run.venv / "bin")


@pytest.mark.parametrize("mode", [0o600, 0o644], ids=["private", "readable by others"])
def test_slurm_uses_the_users_token_file_only_if_no_one_else_can_read_it(tmp_path, mode):
    token = "5e" * 32
    path = tmp_path / "ray-token"
    path.write_text(token + "\n")
    path.chmod(mode)
    run = SlurmRun(tmp_path, HOSTS3[:2], (SPEC,), PROMPTSWEEP_RAY_TOKEN=str(path))
    if mode == 0o644:
        assert run.returncode != 0 and "chmod 600" in run.output
        assert [c["prog"] for c in run.calls if c["prog"] != "hostname"] == []
        return
    assert run.returncode == 0, run.output
    assert token not in run.output, "the token was printed"
    for call in [*run.of("ray"), *run.waits(), *run.sweeps()]:
        assert (call["env"]["RAY_AUTH_MODE"], call["env"]["RAY_AUTH_TOKEN"]) == ("token", token)


def test_slurm_single_node_job(tmp_path):
    run = SlurmRun(tmp_path, ("gpu-c03",), (SPEC,), ips={"gpu-c03": "10.20.0.1"})
    assert run.returncode == 0, run.output
    assert len(run.ray_starts(head=True)) == 1 and run.ray_starts(head=False) == []
    (sweep,) = run.sweeps()
    assert sweep["argv"] == ["-m", "sweep.launch", SPEC, "--address", f"10.20.0.1:{PORT}"]


def test_slurm_head_that_never_answers_starts_nothing_else(tmp_path):
    run = SlurmRun(tmp_path, HOSTS3, (SPEC,), STUB_HEAD_DOWN="1")
    assert run.returncode != 0
    assert "head" in run.output
    assert run.ray_starts(head=False) == [] and run.sweeps() == []


def test_slurm_node_that_never_joins_stops_before_the_sweep(tmp_path):
    run = SlurmRun(tmp_path, HOSTS3, (SPEC,), STUB_JOIN_FAIL="1")
    assert run.returncode != 0
    assert "joined" in run.output
    assert run.sweeps() == []


def test_slurm_job_ends_with_the_sweeps_status(tmp_path):
    run = SlurmRun(tmp_path, HOSTS3[:2], (SPEC,), STUB_SWEEP_RC="2")
    assert run.returncode == 2
    assert len(run.sweeps()) == 1


@pytest.mark.parametrize("problem", ["no spec", "missing spec", "missing data", "no venv"])
def test_slurm_bad_input_fails_before_anything_starts(tmp_path, problem):
    args, env = (SPEC,), {}
    if problem == "no spec":
        args = ()
    elif problem == "missing spec":
        args = ("sweeps/no-such-sweep.toml",)
    elif problem == "missing data":
        env["PROMPTSWEEP_DATA"] = str(tmp_path / "nowhere")
    else:
        env["PROMPTSWEEP_VENV"] = str(tmp_path / "no-venv")
    run = SlurmRun(tmp_path, HOSTS3[:2], args, **env)
    assert run.returncode != 0
    assert [c["prog"] for c in run.calls if c["prog"] != "hostname"] == [], run.calls
    word = {"no spec": "usage", "missing spec": "no-such-sweep", "missing data": "nowhere",
            "no venv": "no-venv"}[problem]
    assert word in run.output


def test_slurm_head_without_ipv4_address_fails(tmp_path):
    hosts = HOSTS3[:2]
    run = SlurmRun(tmp_path, hosts, (SPEC,), ips={hosts[0]: "fe80::1%eth0 127.0.1.1",
                                                  hosts[1]: "10.20.0.2"})
    assert run.returncode != 0 and "IPv4" in run.output
    assert run.of("ray") == [] and run.sweeps() == []


def test_slurm_settings_are_documented():
    text = SLURM.read_text()
    settings = set(re.findall(r"\$\{([A-Z][A-Z_]+):-", text))
    assert {"PROMPTSWEEP_VENV", "PROMPTSWEEP_DATA", "HF_HOME", "RAY_PORT"} <= settings
    readme = CLUSTERS_README.read_text()
    for name in settings - {"SLURM_JOB_ID"}:
        assert name in readme, f"{name} (clusters/slurm.sh) is not in clusters/README.md"
    assert f"sbatch clusters/slurm.sh {SPEC}" in readme


# --------------------------------------------------------------------------- Kubernetes

# Field names of KubeRay's RayJob CRD, ray.io/v1 (ray-operator/config/crd/bases/ray.io_rayjobs.yaml).
RAYJOB_SPEC = {"activeDeadlineSeconds", "backoffLimit", "clusterSelector", "deletionStrategy",
               "entrypoint", "entrypointNumCpus", "entrypointNumGpus", "entrypointResources",
               "jobId", "managedBy", "metadata", "preRunningDeadlineSeconds", "rayClusterSpec",
               "runtimeEnvYAML", "shutdownAfterJobFinishes", "submissionMode", "submitterConfig",
               "submitterPodTemplate", "suspend", "ttlSecondsAfterFinished"}
RAYCLUSTER_SPEC = {"authOptions", "autoscalerOptions", "enableInTreeAutoscaling",
                   "gcsFaultToleranceOptions", "headGroupSpec", "headServiceAnnotations",
                   "historyServerOptions", "managedBy", "networkPolicy", "rayVersion", "suspend",
                   "tlsOptions", "upgradeStrategy", "workerGroupSpecs"}
HEAD_GROUP = {"enableIngress", "headService", "ingressOptions", "labels", "rayStartParams",
              "resources", "serviceType", "template"}
WORKER_GROUP = {"groupName", "idleTimeoutSeconds", "labels", "maxReplicas", "minReplicas",
                "numOfHosts", "priority", "rayStartParams", "replicas", "resources",
                "scaleStrategy", "suspend", "template"}
GPU = "nvidia.com/gpu"


@pytest.fixture(scope="module")
def rayjob() -> dict[str, Any]:
    return yaml.safe_load(RAYJOB.read_text())


@pytest.fixture(scope="module")
def cluster(rayjob) -> dict[str, Any]:
    return rayjob["spec"]["rayClusterSpec"]


@pytest.fixture(scope="module")
def storage() -> dict[str, dict[str, Any]]:
    return {doc["kind"]: doc for doc in yaml.safe_load_all(STORAGE.read_text())}


def _groups(cluster: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [("head", cluster["headGroupSpec"])] + [
        (g["groupName"], g) for g in cluster["workerGroupSpecs"]]


def _ray_container(group: dict[str, Any]) -> dict[str, Any]:
    return group["template"]["spec"]["containers"][0]  # KubeRay's Ray container is the first


def _entrypoint(rayjob: dict[str, Any]) -> list[list[str]]:
    return [shlex.split(part) for part in rayjob["spec"]["entrypoint"].split("&&")]


def test_rayjob_kind_and_field_names(rayjob, cluster):
    assert rayjob["apiVersion"] == "ray.io/v1" and rayjob["kind"] == "RayJob"
    assert re.fullmatch(r"[a-z]([-a-z0-9]{0,50}[a-z0-9])?", rayjob["metadata"]["name"])
    assert set(rayjob["spec"]) <= RAYJOB_SPEC, set(rayjob["spec"]) - RAYJOB_SPEC
    assert set(cluster) <= RAYCLUSTER_SPEC, set(cluster) - RAYCLUSTER_SPEC
    assert set(cluster["headGroupSpec"]) <= HEAD_GROUP
    for group in cluster["workerGroupSpecs"]:
        assert set(group) <= WORKER_GROUP, set(group) - WORKER_GROUP
    for name, group in _groups(cluster):
        params = group.get("rayStartParams", {})
        assert all(isinstance(v, str) for v in params.values()), f"{name}: rayStartParams are strings"
        assert "address" not in params and "block" not in params, f"{name}: KubeRay sets these"


def test_rayjob_runs_a_sweep_of_this_repository(rayjob):
    parts = _entrypoint(rayjob)
    (launch,) = [p for p in parts if p[:3] == ["python", "-m", "sweep.launch"]]
    spec_path = launch[3]
    assert (ROOT / spec_path).is_file(), f"{spec_path} is not in the repository"
    assert option(launch, "--address") == "auto", "join the RayJob's cluster"
    assert parts[0][0] == "cd", "the entrypoint runs in the installed project"
    from sweep.spec import load_spec

    spec = load_spec(ROOT / spec_path, check_paths=False)
    # Results outlive the cluster: on the volume that every pod mounts.
    mount = _volume_mount(rayjob)
    results = option(launch, "--results")
    assert results and Path(results).is_relative_to(mount), f"results in {results}, not on {mount}"
    assert Path(spec.data.root).is_relative_to(mount), f"the spec's data root {spec.data.root}"
    if spec.model.checkpoint:
        assert Path(spec.model.checkpoint).is_relative_to(mount)
    assert rayjob["metadata"]["name"].endswith(spec.name.replace("_", "-"))


def test_rayjob_deletes_its_cluster(rayjob):
    assert rayjob["spec"]["shutdownAfterJobFinishes"] is True
    assert rayjob["spec"].get("backoffLimit", 0) == 0, "a retry without --resume would fail"


def test_head_has_no_gpu(cluster):
    head = cluster["headGroupSpec"]
    params = head["rayStartParams"]
    assert params.get("num-gpus") == "0"
    container = _ray_container(head)
    for kind in ("limits", "requests"):
        assert GPU not in container["resources"].get(kind, {}), f"GPU {kind} on the head"
    assert 1 <= int(params["num-cpus"]) <= int(container["resources"]["limits"]["cpu"])


def test_gpu_workers_fit_the_sweep(rayjob, cluster):
    total = 0
    for group in cluster["workerGroupSpecs"]:
        resources = _ray_container(group)["resources"]
        gpus = int(resources["limits"].get(GPU, 0))
        if GPU in resources.get("requests", {}):
            assert int(resources["requests"][GPU]) == gpus, "GPU requests must equal limits"
        low, n, high = group["minReplicas"], group["replicas"], group["maxReplicas"]
        assert 0 <= low <= n <= high, f"{group['groupName']}: replicas {low} <= {n} <= {high}"
        assert "num-gpus" not in group.get("rayStartParams", {}), "KubeRay reads the GPU limit"
        total += gpus * n
    assert total >= 1, "no worker group has nvidia.com/gpu limits"
    from sweep.spec import load_spec

    (launch,) = [p for p in _entrypoint(rayjob) if p[:3] == ["python", "-m", "sweep.launch"]]
    spec = load_spec(ROOT / launch[3], check_paths=False)
    assert total >= spec.resources.actors * spec.resources.gpus_per_actor, \
        f"{total} GPUs for {spec.resources.actors} oracle actors"


def _volume_mount(rayjob: dict[str, Any]) -> str:
    mounts = set()
    for name, group in _groups(rayjob["spec"]["rayClusterSpec"]):
        claims = {v["name"]: v["persistentVolumeClaim"]["claimName"]
                  for v in group["template"]["spec"].get("volumes", [])
                  if "persistentVolumeClaim" in v}
        assert claims, f"{name}: no PersistentVolumeClaim volume"
        paths = [m["mountPath"] for m in _ray_container(group).get("volumeMounts", [])
                 if m["name"] in claims]
        assert len(paths) == 1, f"{name}: the claim is not mounted once in the Ray container"
        mounts.add((tuple(sorted(claims.values())), paths[0]))
    assert len(mounts) == 1, f"pods mount different volumes or paths: {mounts}"
    return mounts.pop()[1]


def test_every_pod_mounts_the_volume_of_storage_yaml(rayjob, storage):
    mount = _volume_mount(rayjob)
    claim = storage["PersistentVolumeClaim"]
    assert claim["apiVersion"] == "v1"
    assert "ReadWriteMany" in claim["spec"]["accessModes"], "pods on several nodes mount it"
    group = rayjob["spec"]["rayClusterSpec"]["headGroupSpec"]
    (volume,) = [v for v in group["template"]["spec"]["volumes"] if "persistentVolumeClaim" in v]
    assert volume["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    pod = storage["Pod"]
    (files,) = pod["spec"]["containers"]
    assert [v["persistentVolumeClaim"]["claimName"] for v in pod["spec"]["volumes"]] == \
        [claim["metadata"]["name"]]
    assert [m["mountPath"] for m in files["volumeMounts"]] == [mount], "one layout for both"


def test_image_and_install_match_the_readme(rayjob, cluster):
    containers = [_ray_container(g) for _, g in _groups(cluster)]
    (image,) = {c["image"] for c in containers}
    assert image.startswith("rayproject/ray:"), image
    tag = image.split(":", 1)[1]
    assert cluster["rayVersion"] == ray.__version__ and tag.startswith(f"{ray.__version__}-"), (
        f"the cluster runs Ray {tag}, rayVersion {cluster['rayVersion']}, this machine Ray "
        f"{ray.__version__}: keep them equal")
    assert tag.endswith("-gpu"), "the GPU workers need the CUDA image"
    (install,) = {" ".join(" ".join(c["args"]).split()) for c in containers}
    assert "command" not in containers[0], "KubeRay would no longer add `ray start`"
    assert "ray start" not in install
    assert re.search(r"pip install .*-e ~/promptsweep$", install), install
    assert _entrypoint(rayjob)[0] == ["cd", "~/promptsweep"], "the driver runs in the project it installed"
    readme = " ".join(CLUSTERS_README.read_text().split())
    assert image in readme, f"clusters/README.md does not name the image {image}"
    assert install in readme, f"clusters/README.md does not show the install: {install}"


def test_pods_never_download_weights(cluster):
    for name, group in _groups(cluster):
        env = {e["name"]: e.get("value") for e in _ray_container(group).get("env", [])}
        assert env.get("HF_HUB_OFFLINE") == "1", f"{name}: HF_HUB_OFFLINE=1"
        assert env.get("HF_HOME"), f"{name}: HF_HOME names the cache on the volume"


def test_cluster_is_not_exposed(cluster):
    assert cluster.get("authOptions", {}).get("mode") == "token"
    head = cluster["headGroupSpec"]
    assert head.get("serviceType", "ClusterIP") == "ClusterIP"
    assert not head.get("enableIngress", False)
    text = RAYJOB.read_text() + STORAGE.read_text()
    assert not re.search(r"(?i)(password|secret|token)\s*:\s*\S", text.replace("mode: token", ""))
    for name, group in _groups(cluster):  # KubeRay's token, on every pod: none of ours wins
        env = {e["name"] for e in _ray_container(group).get("env", [])}
        assert not env & {"RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"}, name


def test_the_checkpoint_key_outlives_the_pods_outside_the_results(rayjob, cluster):
    head = {e["name"]: e.get("value") for e in _ray_container(cluster["headGroupSpec"])["env"]}
    key = Path(head["PROMPTSWEEP_CHECKPOINT_KEY"])
    (launch,) = [p for p in _entrypoint(rayjob) if p[:3] == ["python", "-m", "sweep.launch"]]
    assert key.is_relative_to(_volume_mount(rayjob)), "a pod's home goes with the pod"
    assert not key.is_relative_to(option(launch, "--results")), "results travel; the key not"
    assert not key.is_relative_to("/data/promptsweep"), "each pod copies that folder"


def test_readmes_cover_the_three_ways():
    readme = CLUSTERS_README.read_text()
    for command in (f"sbatch clusters/slurm.sh {SPEC}", "kubectl apply -f clusters/rayjob.yaml",
                    "kubectl apply -f clusters/storage.yaml", "ray up clusters/gpu.yaml"):
        assert command in readme, f"clusters/README.md lacks `{command}`"
    page = (ROOT / "docs" / "clusters.md").read_text()
    for word in ("clusters/gpu.yaml", "clusters/slurm.sh", "clusters/rayjob.yaml",
                 "clusters/README.md"):
        assert word in page, f"docs/clusters.md does not mention {word}"
    assert "docs/clusters.md" in (ROOT / "README.md").read_text()
