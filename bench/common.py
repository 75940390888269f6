"""What every benchmark records: the machine, the versions, the date; and where figures go."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             cwd=ROOT, check=True)
        # the code's state: edits to earlier figures and to documentation do not count
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                                ":!bench/results", ":!*.md"],
                               capture_output=True, text=True, cwd=ROOT).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def machine(device: str | None = None) -> dict[str, object]:
    """Machine, versions, threads and date, for the header of every result file."""
    import torch

    info: dict[str, object] = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "commit": _commit(),
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "versions": {p: _version(p) for p in ("torch", "open_clip_torch", "ray", "numpy")},
    }
    if device and device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:  # a GPU machine may have torch but not Ray
        return None


def sync(device: str) -> None:
    """Wait for the device's queued work (CUDA runs asynchronously)."""
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn: Callable[[], object], device: str, min_seconds: float = 3.0,
          max_repeats: int = 5) -> tuple[float, int, object]:
    """Median wall time of ``fn`` over repeats (until ``min_seconds`` or ``max_repeats``)."""
    times, out = [], None
    while not times or (sum(times) < min_seconds and len(times) < max_repeats):
        sync(device)
        t0 = time.perf_counter()
        out = fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), len(times), out


def random_task(classes: int, shots: int, size: int | None):
    """A few-shot task of random ``size`` px RGB images (None: 1 px placeholders never read),
    named after ImageNet's first ``classes`` classes; train, val and test are the same split."""
    import numpy as np
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES

    from sweep.data import FewShot, Split

    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(classes), shots)
    if size is None:
        images = [np.zeros((1, 1), dtype=np.uint8)] * len(labels)
    else:
        images = [rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8) for _ in labels]
    split = Split(images, labels)
    return FewShot(dataset="bench", classnames=tuple(IMAGENET_CLASSNAMES[:classes]),
                   template="a photo of a {}.", shots=shots, seed=0, train=split, val=split,
                   test=split)


def child(module: str, job: dict, cwd: Path | None = None) -> dict:
    """``python -m <module> --measure <job>`` in a fresh process (its own peak memory and
    imports, from ``cwd``), and the JSON it prints last (``answer_child``)."""
    out = subprocess.run([sys.executable, "-m", module, "--measure", json.dumps(job)], cwd=cwd,
                         stdout=subprocess.PIPE, text=True)
    if out.returncode != 0:
        raise SystemExit(f"measurement {job} failed with exit status {out.returncode}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def answer_child(job: str | None, measure: Callable[[dict], dict]) -> bool:
    """In a process ``child`` started: run ``measure`` on its job and print the result."""
    if job is None:
        return False
    print(json.dumps(measure(json.loads(job))))
    return True


def export_commit(rev: str, folder: Path) -> Path:
    """Commit ``rev``'s sweep/ and methods/ in ``folder``, beside this tree's bench/: run a
    command there (``cwd``) to measure that commit's code with today's benchmark."""
    archive = subprocess.run(["git", "archive", rev, "sweep", "methods"], cwd=ROOT,
                             capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    (folder / "bench").symlink_to(ROOT / "bench")
    return folder


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports kB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_mb(pid: int | None = None) -> tuple[float, float]:
    """(current, peak) resident memory of a process in MB, from /proc (Linux)."""
    fields = {}
    for line in Path(f"/proc/{pid or os.getpid()}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) / 1024
    return fields["VmRSS"], fields["VmHWM"]


def write(name: str, payload: dict[str, object], out: Path | None = None) -> Path:
    """Write ``payload`` as ``bench/results/<name>.json`` (or ``out``) and say where."""
    path = out or RESULTS / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {path}", file=sys.stderr)
    return path
