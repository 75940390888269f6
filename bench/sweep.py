"""A whole sweep, end to end: wall time and the memory of every process it starts.

    python -m bench.sweep            # the embedded default sweep (python -m sweep.launch)
    python -m bench.sweep --soak     # 200 short trials: does memory grow?
    python -m bench.sweep --groups   # 4 groups x 3 settings at concurrency 2: are the slots busy?

The sweep runs as ``python -m sweep.launch`` in a child process, into a
temporary results folder; its process tree (the driver, Ray's own processes,
the oracle actors and the trial workers, told apart by the process titles Ray
sets) is sampled every half second from /proc. Start and end are the samples
at which the first and the last trial's part file had appeared. Figures go to
``bench/results/sweep.json`` and ``bench/results/soak.json``.

``--groups`` runs ``GROUPS_SPEC`` (2 methods x 2 shot counts, 3 settings each,
one seed, concurrency 2) with this tree's code and with a baseline commit's
(``--baseline``, exported to a temporary folder), one after the other, and
reports each run's span (first trial's start to last trial's end) and the
slots' utilisation: the sum of the trials' wall times over concurrency x span.
Figures go to ``bench/results/groups.json``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import common

SOAK_SPEC = """\
name = "soak"
description = "200 short BPT-VLM trials on the embedded default: memory over a long sweep"

[model]
name = "promptsweep-tiny"

[data]
datasets = ["digits"]
shots = [16]
seeds = [1]

[budget]
unit = "candidate_evals"
limit = 60

[search]
methods = ["bpt-vlm"]
samples = 200
seed = 0

[resources]
concurrency = 2
actors = 2
"""


GROUPS_SPEC = """\
name = "groups"
description = "4 groups x 3 settings at concurrency 2, one seed: slot utilisation"

[data]
datasets = ["digits"]
shots = [4, 16]
seeds = [1]

[budget]
limit = 240

[search]
methods = ["bbt", "bpt-vlm"]
samples = 3
seed = 0

[resources]
concurrency = 2
actors = 1

[methods.bbt]
params = { popsize = 10, intrinsic_dim_text = 50 }

[methods.bpt-vlm]
params = { popsize = 10, intrinsic_dim_text = 50, intrinsic_dim_visual = 50 }
"""


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # the command name is in parentheses and may hold spaces: split after it
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        tree.setdefault(ppid, []).append(int(stat.parent.name))
    return tree


def _descendants(root: int) -> list[int]:
    tree, out, todo = _children(), [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(tree.get(pid, []))
    return out


def _role(pid: int, root: int) -> str | None:
    if pid == root:
        return "driver"
    try:
        title = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return None
    if "OracleServer" in title:
        return "oracle actor"
    if "ImplicitFunc" in title or "train" in title.split(" ", 1)[0]:
        return "trial worker"
    if title.startswith("ray::"):
        return None  # an idle worker: counted once it takes a role
    return "ray"


def _trial_rows(results: Path) -> int:
    import pyarrow.dataset as ds

    return sum(ds.dataset(d, format="parquet").count_rows() for d in results.glob("*/trials"))


def run(argv: list[str], results: Path, cwd: Path | None = None) -> dict:
    """Run ``python -m sweep.launch argv`` (in ``cwd``: that folder's sweep/), sampling memory;
    return wall time and memory figures."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "sweep.launch", *argv, "--results", str(results),
                             "--quiet"], cwd=cwd)
    roles: dict[int, str] = {}
    series: dict[int, list[tuple[float, float, int]]] = {}  # pid -> (time, MB, trials done)
    total_peak = 0.0
    while proc.poll() is None:
        now, done, total = time.perf_counter() - t0, len(list(results.rglob("trials/*.parquet"))), 0.0
        for pid in _descendants(proc.pid):
            role = _role(pid, proc.pid)
            try:
                rss, _ = common.rss_mb(pid)
            except (OSError, KeyError):
                continue
            total += rss
            if role:
                roles[pid] = role
                series.setdefault(pid, []).append((now, rss, done))
        total_peak = max(total_peak, total)
        time.sleep(0.5)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"the sweep failed with exit status {proc.returncode}")
    processes = []
    for pid, samples in series.items():
        started = [s for s in samples if s[2] >= 1] or samples
        processes.append({"pid": pid, "role": roles[pid], "start_mb": started[0][1], "end_mb": samples[-1][1],
                          "peak_mb": max(s[1] for s in samples), "trials_at_end": samples[-1][2]})
    processes.sort(key=lambda p: (p["role"], p["pid"]))
    driver = next(p for p in processes if p["role"] == "driver")
    return {"wall_s": wall, "driver_peak_mb": driver["peak_mb"], "tree_peak_mb": total_peak,
            "trial_files": len(list(results.rglob("trials/*.parquet"))), "trial_rows": _trial_rows(results),
            "processes": [p for p in processes if p["role"] in ("driver", "oracle actor")],
            "trial_workers": len([p for p in processes if p["role"] == "trial worker"])}


def utilisation(results: Path, concurrency: int) -> dict:
    """The span of a finished sweep and how busy its trial slots were.

    Read from Ray Tune's own log of each trial (its last report), the same for any version
    of the code: a trial starts when its first seed does (``started_at``, to the
    microsecond) and is busy for Tune's ``time_total_s`` (its whole function, setup
    included).
    """
    import json

    starts, busy = [], []
    for log in results.glob(".tune/**/result.json"):
        last = json.loads(log.read_text().strip().splitlines()[-1])
        starts.append(min(o["started_at"] for o in last["outcomes"]))
        busy.append(last["time_total_s"])
    span = max(s + b for s, b in zip(starts, busy)) - min(starts)
    return {"trials": len(busy), "span_s": span, "trial_wall_s": sum(busy),
            "utilisation": sum(busy) / (concurrency * span)}


def groups(baseline: str, tmp: Path) -> dict:
    spec = tmp / "groups.toml"
    spec.write_text(GROUPS_SPEC)
    codes = {"before": common.export_commit(baseline, Path(tempfile.mkdtemp(dir=tmp))),
             "after": common.ROOT}
    out: dict = {"baseline": baseline, "spec": GROUPS_SPEC}
    for label, code in codes.items():
        results = tmp / f"results-{label}"
        figures = run([str(spec)], results, cwd=code)
        out[label] = {"wall_s": figures["wall_s"], **utilisation(results / "groups", 2)}
        print(f"{label}: span {out[label]['span_s']:.0f} s, utilisation "
              f"{out[label]['utilisation']:.2f} ({out[label]['trials']} trials)", file=sys.stderr)
    out["span_ratio"] = out["after"]["span_s"] / out["before"]["span_s"]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.sweep", description=__doc__.split("\n\n")[0])
    parser.add_argument("--soak", action="store_true", help="200 short trials instead of the default sweep")
    parser.add_argument("--groups", action="store_true",
                        help="4 groups x 3 settings: slot utilisation, against --baseline")
    parser.add_argument("--baseline", default="c477317",
                        help="the commit --groups compares with (default: the last before all "
                             "groups ran in one Tune run)")
    parser.add_argument("--out", help="result file (default bench/results/sweep.json, soak.json "
                                      "or groups.json)")
    args = parser.parse_args(argv)
    if args.groups:
        with tempfile.TemporaryDirectory() as tmp:
            figures = groups(args.baseline, Path(tmp))
        common.write("groups", {"machine": common.machine(), **figures},
                     None if args.out is None else Path(args.out))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        if args.soak:
            spec = Path(tmp) / "soak.toml"
            spec.write_text(SOAK_SPEC)
            figures = run([str(spec)], Path(tmp) / "results")
        else:
            figures = run([], Path(tmp) / "results")
    print(f"wall {figures['wall_s']:.0f} s; driver peak {figures['driver_peak_mb']:.0f} MB; "
          f"all processes at most {figures['tree_peak_mb']:.0f} MB together; "
          f"{figures['trial_rows']} trial rows in {figures['trial_files']} part files")
    for p in figures["processes"]:
        print(f"  {p['role']:<12} pid {p['pid']:>7}: {p['start_mb']:6.0f} MB after the first trial, "
              f"{p['end_mb']:6.0f} MB at the end (peak {p['peak_mb']:.0f} MB)")
    name = "soak" if args.soak else "sweep"
    common.write(name, {"machine": common.machine(), "command": "python -m sweep.launch"
                        + (" <soak spec>" if args.soak else ""), "spec": SOAK_SPEC if args.soak else "default",
                        **figures}, None if args.out is None else Path(args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
