"""Each method changed for fidelity, before and after, at its default budget, on inverted digits.

    python -m bench.fidelity [--seed 1] [--methods zip cbbt ...]

Issue 14 made several methods do what their official code does (their
version went up; ``methods.METHODS``). Every earlier behaviour is still one
option away, so "before" and "after" are the same code: the method's old
settings against its new defaults, each run once at the method's default
budget on the same task and seed, in this process. The task leaves room to
show a difference: the held-out digits with their pixels inverted (255 - x),
written as a ``folder`` data set (zero-shot about 11% here, white-box CoOp
about 34%, where the plain digits give every method 85-94%).

Records ``bench/results/fidelity.json``: per method, the settings of each
side, its final validation and test accuracy, the queries and wall time.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from bench import common

#: method -> (what changed, the settings that give its earlier behaviour).
# Mini-batches: v1 drew each request's on its own; v2 cuts per-epoch permutations (Dassl).
# Views: v1 scored the images as they are; CBBT, ZIP and BlackVIP now train on augmented views.
_V1_BATCHES = {"minibatches": "independent"}
_V1_DATA = {**_V1_BATCHES, "augment": False}
BEFORE: dict[str, tuple[str, str, dict]] = {
    "bbt": ("bbt", "deploys the best of its prompts on its dev draw (79 of the 8,000 "
            "evaluations), where v1 deployed the best training loss", {"select": "train_loss"}),
    "zip": ("zip", "ZIP's low-rank 417-variable map at Fastfood's scale, its N(0, 0.02^2) "
            "context, per-epoch batches and augmented views, where v1 searched a dense 417-d "
            "Gaussian subspace at BBT's scale", {"text_subspace": "dense", "intrinsic_dim_text": 417,
                                                 "text_init_std": None, **_V1_DATA}),
    "cbbt": ("cbbt-adapter", "prompt only as released, one warm-up epoch, a per-epoch cosine, "
             "per-epoch batches and augmented views, where v1 trained a reconstructed "
             "CLIP-Adapter beside the prompt under a per-step cosine",
             {"schedule": "cosine", "warmup_epochs": 0, **_V1_DATA}),
    "cbbt-tip": ("cbbt-tip", "CBBT's Tip defaults (alpha 3, beta 1), its per-epoch schedule and "
                 "batches, augmented views and a cache of each image's mean view, where v1 had "
                 "the Tip-Adapter paper's (alpha 1, beta 5.5) under a per-step cosine",
                 {"tip_alpha": 1.0, "tip_beta": 5.5, "schedule": "cosine", "warmup_epochs": 0,
                  **_V1_DATA}),
    "blackvip-tokens": ("blackvip-tokens", "the data set's template on the text side, "
                        "per-epoch batches and augmented views, where v1 (blackvip) used "
                        "'{class}.'", {"text_template": False, **_V1_DATA}),
}


def inverted_digits(root: Path) -> Path:
    """The held-out digits with inverted pixels, as ``root/{train,val,test}/<class>/<i>.png``."""
    from sweep.data import load_digits_task

    task = load_digits_task()
    for name in ("train", "val", "test"):
        split = getattr(task, name)
        for i, (image, label) in enumerate(zip(split.images, split.labels)):
            folder = root / name / task.classnames[int(label)]
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(255 - np.asarray(image)).save(folder / f"{i:04d}.png")
    return root


def _run(method: str, params: dict, model, task, seed: int) -> dict:
    from sweep.run.runner import build_run, default_budget, run_once

    run = build_run(method, params, model, task, default_budget(method), seed)
    start = time.perf_counter()
    result = run_once(run)
    last = result.checkpoints[-1]
    unit = run.oracle.budget.unit
    return {"method": method, "params": params, "val_acc": last.val_acc, "test_acc": last.test_acc,
            "queries": result.used[unit], "unit": unit,
            "wall_s": round(time.perf_counter() - start, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=list(BEFORE), choices=list(BEFORE))
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--shots", type=int, default=16)
    args = parser.parse_args(argv)

    import torch

    from sweep.data import few_shot, load_dataset
    from sweep.oracle import load_model
    from sweep.spec import ModelSpec

    torch.set_num_threads(1)  # as a trial worker runs
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        dataset = load_dataset("folder", inverted_digits(Path(tmp)))
        task = few_shot(dataset, args.shots, args.seed)
        model = load_model(ModelSpec())
        for name in args.methods:
            old_name, change, old_params = BEFORE[name]
            before = _run(old_name, old_params, model, task, args.seed)
            after = _run(name, {}, model, task, args.seed)
            rows.append({"method": name, "change": change, "before": before, "after": after})
            print(f"{name}: test {before['test_acc']:.1%} -> {after['test_acc']:.1%} "
                  f"(val {before['val_acc']:.1%} -> {after['val_acc']:.1%})", file=sys.stderr)
    common.write("fidelity", {"machine": common.machine(), "task": "inverted digits (folder), "
                              f"{args.shots} shots, seed {args.seed}", "methods": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
