"""The data path before and after: decoding, the first request, a checkpoint, decodes, an actor's memory.

    python -m bench.data                          # against the commit named by --baseline
    python -m bench.data --baseline a659ef0 --out bench/results/data.json

The benchmark writes CoOp-layout data sets of JPEGs to a temporary folder and
measures, each in a fresh process, with the code of this tree ("after") and
with that of the baseline commit ("before", exported to a temporary folder):

- ``decode``: images decoded and preprocessed per second, by decoding workers
  (after: the node's pixel cache filled with 1, 2, 4 threads; before: the
  oracle's one-by-one preprocessing);
- ``first_request``: a fresh actor's first training request with visual
  prompts (its decoding included), and ``checkpoint``: the evaluation of one
  recommendation with visual prompts on validation and the 5,000-image test
  split, once the actor is warm;
- ``decodes``: images decoded per image used over a sweep of 2 seeds x 2
  settings x 8 checkpoints with visual prompts (a training request and the
  validation and test evaluations at each checkpoint);
- ``memory``: one actor serving 3 data sets x 3 seeds x 2 layouts (text-only;
  text + visual): its own accounting of what it holds and the process's peak
  resident memory beside the process's with only the model loaded; after,
  also under a device budget smaller than what it would keep
  (``memory_small_budget``).

The model takes 224 px images but is narrow (the embedded model's widths and
depths, 32 px patches, random weights) so that, as on a GPU, decoding and not
the towers sets the pace here: ViT-B/32's image tower would take minutes for
5,000 images on this CPU and hide the data path. The JPEGs of ``decode``,
``first_request`` and ``checkpoint`` are 500x375 (like the CoOp benchmarks'
photos); the decode count and the memory use small ones, since neither
depends on an image's size.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

from bench import common

CLASSES, SHOTS, VAL, TEST = 100, 16, 4, 5000
WORKERS = (1, 2, 4)
#: 8 MB: less than the memory measurement's 19 MB of patch embeddings.
SMALL_BUDGET = 8 << 20
N_TEXT, N_VISUAL = 8, 5


# ---------------------------------------------------------------------- generated data
def _coop_dataset(root: Path, name: str, classes: int, test: int, size: tuple[int, int],
                  seed: int) -> None:
    """``name`` (a CoOp benchmark) under ``root`` in CoOp's layout: 16 + 4 shots per class and
    ``test`` test images, JPEGs of ``size`` (w, h) with smooth random content."""
    from PIL import Image

    from sweep.data import COOP_DATASETS

    layout = COOP_DATASETS[name]
    folder = root / layout.folder
    images = folder / layout.image_dir
    rng = np.random.default_rng(seed)
    split: dict[str, list] = {"train": [], "val": [], "test": []}
    counts = {"train": SHOTS, "val": VAL, "test": -(-test // classes)}
    for c in range(classes):
        (images / f"class_{c:03d}").mkdir(parents=True, exist_ok=True)
        for part, n in counts.items():
            for i in range(n):
                if part == "test" and len(split["test"]) >= test:
                    break
                rel = f"class_{c:03d}/{part}_{i}.jpg"
                w, h = size
                # a smooth field (a random walk along each row): JPEG sizes like photos'
                base = np.cumsum(rng.normal(0, 6, (h, w, 3)), axis=1) + rng.integers(0, 256, 3)
                Image.fromarray(np.clip(base, 0, 255).astype(np.uint8)).save(images / rel,
                                                                             quality=90)
                split[part].append([rel, c, f"class {c}"])
    (folder / str(layout.split_file)).write_text(json.dumps(split))


def _model_config(folder: Path) -> Path:
    """The embedded model's architecture with 224 px images and 32 px patches."""
    from sweep.oracle import EMBEDDED_CONFIG

    cfg = json.loads(EMBEDDED_CONFIG.read_text())
    cfg["vision_cfg"].update(image_size=224, patch_size=32)
    path = folder / "bench-narrow-224.json"
    path.write_text(json.dumps(cfg))
    return path


# ---------------------------------------------------------------------- one measurement
def _server(config: str, pixels: str | None, cache_bytes: int | None = None):
    """An oracle actor's body in this process, with the code under test."""
    import torch

    from sweep.oracle import OracleServer
    from sweep.spec import ModelSpec

    torch.manual_seed(0)
    spec = ModelSpec(name=Path(config).stem, config=config)
    extra = {"pixel_folder": pixels, "cache_bytes": cache_bytes} \
        if "pixel_folder" in inspect.signature(OracleServer).parameters else {}
    return OracleServer(spec, "cpu", 2, **extra)


def _request(server, key, layout, split: str | None, seed: int = 0) -> float:
    """One request of one candidate (a training request, or an evaluation on ``split``), with
    the ``info`` call a trial makes first (the first builds the task's oracle)."""
    t0 = time.perf_counter()
    info = server.info(key, layout)
    rng = np.random.default_rng(seed)
    text = rng.normal(0, 0.02, (1, *info["text_shape"])).astype(np.float32)
    visual = (rng.normal(0, 0.5, (1, *info["visual_shape"])).astype(np.float32)
              if layout.n_visual else None)
    if split is None:
        server.evaluate(key, layout, text, visual, False, None)
    else:
        server.evaluate_split(key, layout, split, text, visual, False)
    return time.perf_counter() - t0


def _counting():
    """Count every decode (``Split.load``) of this process, by file."""
    from sweep.data import Split

    calls: Counter[str] = Counter()
    real = Split.load

    def load(self, i):
        calls[str(self.images[i])] += 1
        return real(self, i)

    Split.load = load
    return calls


def measure(job: dict) -> dict:
    import torch

    from sweep.data import few_shot, load_dataset
    from sweep.oracle import PromptLayout, TaskKey

    torch.set_num_threads(2)
    visual = PromptLayout(n_text=N_TEXT, n_visual=N_VISUAL)
    kind, root = job["kind"], job["root"]
    if kind == "decode":
        from sweep.oracle import load_model
        from sweep.spec import ModelSpec

        model = load_model(ModelSpec(name=Path(job["config"]).stem, config=job["config"]), "cpu")
        split = load_dataset("Caltech101", root).test
        order = range(job["images"])
        if job["workers"] is None:  # before: the oracle's one-by-one preprocessing
            t0 = time.perf_counter()
            torch.stack([model.preprocess(split.load(i)) for i in order])
        else:
            from sweep.data import PixelCache

            cache = PixelCache(job["pixels"], model.pixels[0], workers=job["workers"])
            t0 = time.perf_counter()
            cache.pixels(split, list(order))
        return {"images_per_s": job["images"] / (time.perf_counter() - t0)}
    if kind == "latency":
        t0 = time.perf_counter()
        server = _server(job["config"], job["pixels"])
        key = TaskKey("Caltech101", root, SHOTS, 1)
        first = _request(server, key, visual, None)
        startup = time.perf_counter() - t0
        checkpoints = [_request(server, key, visual, "val") + _request(server, key, visual, "test")
                       for _ in range(2)]  # the first decodes the test split, then it is warm
        return {"first_request_s": first, "start_and_first_request_s": startup,
                "first_checkpoint_s": checkpoints[0], "checkpoint_s": checkpoints[1]}
    if kind == "decodes":
        calls = _counting()
        server = _server(job["config"], job["pixels"])
        dataset = load_dataset("Caltech101", root)
        used: set[str] = {str(p) for p in dataset.test.images}
        for _setting in range(2):
            for seed in (1, 2):
                key = TaskKey("Caltech101", root, SHOTS, seed)
                task = few_shot(dataset, SHOTS, seed)
                used |= {str(p) for s in (task.train, task.val) for p in s.images}
                for checkpoint in range(8):
                    _request(server, key, visual, None, checkpoint)
                    _request(server, key, visual, "val", checkpoint)
                    _request(server, key, visual, "test", checkpoint)
        per_image = [calls[p] for p in used]
        return {"images_used": len(used), "decodes": sum(calls.values()),
                "decodes_per_image": sum(calls.values()) / len(used),
                "max_decodes_of_one_image": max(per_image)}
    if kind == "memory":
        server = _server(job["config"], job["pixels"], job.get("cache_bytes"))
        model_rss = common.rss_mb()[0]
        for name in job["datasets"]:
            for seed in (1, 2, 3):
                key = TaskKey(name, root, SHOTS, seed)
                for layout in (PromptLayout(n_text=N_TEXT), visual):
                    for split in (None, "val", "test"):
                        _request(server, key, layout, split)
        out = {"rss_with_model_mb": model_rss, "peak_rss_mb": common.rss_mb()[1]}
        if hasattr(server, "memory"):
            out["held"] = server.memory()
        return out
    raise ValueError(f"unknown measurement {kind!r}")


# ---------------------------------------------------------------------- the driver
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.data", description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default="a659ef0",
                        help="the commit measured as 'before' (default: the last before the "
                             "node cache)")
    parser.add_argument("--out", help="result file (default bench/results/data.json)")
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if common.answer_child(args.measure, measure):
        return 0
    os.environ["HF_HUB_OFFLINE"] = "1"

    with tempfile.TemporaryDirectory(prefix="bench-data-") as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        photos, small = tmp / "photos", tmp / "small"
        _coop_dataset(photos, "Caltech101", CLASSES, TEST, (500, 375), seed=0)
        _coop_dataset(small, "Caltech101", CLASSES, TEST, (64, 48), seed=1)
        memory_sets = ("OxfordPets", "DTD", "EuroSAT")
        for i, name in enumerate(memory_sets):
            _coop_dataset(small, name, 10, 300, (64, 48), seed=2 + i)
        print(f"data written in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        config = str(_model_config(tmp))
        codes = {"before": common.export_commit(args.baseline, Path(tempfile.mkdtemp(dir=tmp))),
                 "after": common.ROOT}
        result: dict = {"before": {}, "after": {}}
        for label, code in codes.items():
            def job(kind: str, **extra) -> dict:
                pixels = Path(tempfile.mkdtemp(dir=tmp))  # a cold node cache for each process
                spec = {"kind": kind, "config": config, "pixels": str(pixels), **extra}
                print(f"{label}: {kind} {extra}", file=sys.stderr)
                out = common.child("bench.data", spec, cwd=code)  # that code's sweep/
                shutil.rmtree(pixels)
                return out

            workers = (None,) if label == "before" else WORKERS
            result[label]["decode"] = {str(w or 1): job("decode", root=str(photos), images=600,
                                                         workers=w)["images_per_s"]
                                       for w in workers}
            result[label]["latency"] = job("latency", root=str(photos))
            result[label]["decodes"] = job("decodes", root=str(small))
            result[label]["memory"] = job("memory", root=str(small), datasets=list(memory_sets))
            if label == "after":  # a budget smaller than what the actor would keep
                result[label]["memory_small_budget"] = job(
                    "memory", root=str(small), datasets=list(memory_sets), cache_bytes=SMALL_BUDGET)
            print(json.dumps(result[label]), file=sys.stderr)
    before, after = result["before"], result["after"]
    result["checkpoint_speedup"] = before["latency"]["checkpoint_s"] / after["latency"]["checkpoint_s"]
    result["setup"] = {"classes": CLASSES, "shots": SHOTS, "val_per_class": VAL, "test": TEST,
                       "model": "embedded widths and depths, 224 px, 32 px patches, random weights",
                       "baseline": args.baseline, "memory_data_sets": "3 x (10 classes, 300 test)",
                       "threads": 2}
    common.write("data", {"machine": common.machine(), **result},
                 None if args.out is None else Path(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
