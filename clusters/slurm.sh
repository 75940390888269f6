#!/bin/bash
# A Ray cluster inside one Slurm job, and a promptsweep sweep on it. From the
# repository root, on a login node:
#
#     sbatch clusters/slurm.sh sweeps/coop16.toml
#     sbatch clusters/slurm.sh sweeps/coop16.toml --resume    # options go on to sweep.launch
#
# Ray's pattern for Slurm (docs.ray.io: cluster/vms/user-guides/community/slurm):
# one task per node; the first node runs Ray's head, the others Ray workers, each
# with its task's CPUs and GPUs; then the sweep's driver runs in this batch step,
# on the first node, and joins that cluster. The job ends when the sweep does.
# clusters/README.md has the walk-through; tests/test_clusters_offline.py runs
# this script with stand-ins for srun, scontrol and ray.
#
# Settings, from the environment (sbatch passes yours on):
#   PROMPTSWEEP_VENV   the project's venv, on a file system every node sees
#                      (default: .venv in the folder you submit from)
#   PROMPTSWEEP_DATA   the data root that the spec's [data] root names
#                      (default /data/coop); checked before Ray starts
#   HF_HOME            the Hugging Face cache with the pretrained weights
#                      (default /data/hf); HF_HUB_OFFLINE=1 is always set
#   RAY_PORT           the port of Ray's head (default 6379)
#   RAY_JOIN_TIMEOUT   seconds to wait for every node to join (default 600)
#   PROMPTSWEEP_RAY_TOKEN  a file (mode 600) holding the Ray token the job uses, for
#                      clients outside the job (ray status, the dashboard); default:
#                      a token made for the job, which nothing outside it can use
#
#SBATCH --job-name=promptsweep
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-task=2
#SBATCH --cpus-per-task=16
#SBATCH --time=24:00:00
#SBATCH --output=promptsweep-%j.out

set -euo pipefail

spec=${1:?usage: sbatch clusters/slurm.sh SPEC.toml [sweep.launch options]}
shift
venv=${PROMPTSWEEP_VENV:-$PWD/.venv}
data_root=${PROMPTSWEEP_DATA:-/data/coop}
port=${RAY_PORT:-6379}
join_timeout=${RAY_JOIN_TIMEOUT:-600}
cpus=${SLURM_CPUS_PER_TASK:?set --cpus-per-task}
gpus=${SLURM_GPUS_PER_TASK:?set --gpus-per-task}

fail() { echo "error: $*" >&2; exit 2; }
[[ -f $spec ]] || fail "$spec: no such sweep specification"
[[ -x $venv/bin/python && -x $venv/bin/ray ]] || fail "no python and ray in $venv (set PROMPTSWEEP_VENV)"
[[ -d $data_root ]] || fail "data root $data_root is missing on $(hostname) (set PROMPTSWEEP_DATA)"

# srun passes this environment on to every node: Ray's processes, and the
# oracle actors they start, find the venv and never download weights.
export PATH="$venv/bin:$PATH"
export HF_HUB_OFFLINE=1
export HF_HOME=${HF_HOME:-/data/hf}
export RAY_USAGE_STATS_ENABLED=0
# Ray's token authentication, with a token made for this job (or yours, from
# PROMPTSWEEP_RAY_TOKEN): other users of the cluster's network cannot use this
# Ray cluster. It is never printed, and the job writes it nowhere.
export RAY_AUTH_MODE=token
token_file=${PROMPTSWEEP_RAY_TOKEN:-}
if [[ -n $token_file ]]; then
    [[ -r $token_file && -s $token_file ]] || fail "no Ray token in $token_file (PROMPTSWEEP_RAY_TOKEN)"
    [[ $(stat -c %a "$token_file") == 600 ]] ||
        fail "$token_file can be read by others: chmod 600 it (PROMPTSWEEP_RAY_TOKEN)"
    RAY_AUTH_TOKEN=$(tr -d ' \n' <"$token_file")
else
    RAY_AUTH_TOKEN=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
fi
export RAY_AUTH_TOKEN
# A temporary folder of the job's own (/tmp/ray may belong to another user).
temp_dir=/tmp/ray-${SLURM_JOB_ID:-$$}

nodes_list=$(scontrol show hostnames "$SLURM_JOB_NODELIST")
mapfile -t nodes <<<"$nodes_list"
head_node=${nodes[0]}
[[ -n $head_node ]] || fail "no nodes in SLURM_JOB_NODELIST=$SLURM_JOB_NODELIST"

# The head's address: the first IPv4 address, not a loopback one, that
# `hostname --ip-address` gives on the head node (it may list IPv6 ones too).
ips=$(srun --nodes=1 --ntasks=1 --nodelist="$head_node" hostname --ip-address)
head_ip=
for ip in $ips; do
    if [[ $ip =~ ^[0-9]+(\.[0-9]+){3}$ && $ip != 127.* ]]; then head_ip=$ip; break; fi
done
[[ -n $head_ip ]] || fail "no IPv4 address for $head_node (hostname --ip-address: $ips)"
address=$head_ip:$port
echo "Ray head: $head_node at $address; ${#nodes[@]} node(s) in all"

srun --nodes=1 --ntasks=1 --nodelist="$head_node" --export=ALL \
    --cpus-per-task="$cpus" --gpus-per-task="$gpus" \
    ray start --head --node-ip-address="$head_ip" --port="$port" \
    --num-cpus="$cpus" --num-gpus="$gpus" --dashboard-host=127.0.0.1 \
    --temp-dir="$temp_dir" --disable-usage-stats --block &
head_pid=$!

# Workers start once the head answers (each `ray status` waits up to about 40 s).
for ((try = 1; ; try++)); do
    if ray status --address="$address" >/dev/null 2>&1; then break; fi
    if ((try == 5)) || ! kill -0 "$head_pid" 2>/dev/null; then
        echo "error: Ray's head did not start on $head_node" >&2
        exit 1
    fi
    sleep 5
done

for node in "${nodes[@]:1}"; do
    srun --nodes=1 --ntasks=1 --nodelist="$node" --export=ALL \
        --cpus-per-task="$cpus" --gpus-per-task="$gpus" \
        ray start --address="$address" \
        --num-cpus="$cpus" --num-gpus="$gpus" \
        --temp-dir="$temp_dir" --disable-usage-stats --block &
done

# The sweep starts when every node has joined, with all the job's GPUs.
python - "$address" "${#nodes[@]}" "$join_timeout" <<'EOF'
import sys
import time

import ray

address, want, timeout = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
ray.init(address=address, logging_level="ERROR", log_to_driver=False)
deadline = time.monotonic() + timeout
while True:
    alive = [node for node in ray.nodes() if node["Alive"]]
    if len(alive) >= want:
        break
    if time.monotonic() > deadline:
        sys.exit(f"error: {len(alive)} of {want} Ray nodes joined within {timeout:.0f} s")
    time.sleep(5)
gpus = sum(node["Resources"].get("GPU", 0) for node in alive)
print(f"Ray cluster: {len(alive)} nodes, {gpus:g} GPUs")
EOF

python -m sweep.launch "$spec" --address "$address" "$@"
