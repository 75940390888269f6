"""Entry point of the main job: ``python -m sweep.launch``.

The distributed sweep (Ray Tune over oracle actors) is not built yet (issue
4). Until then, with no arguments this evaluates the embedded default: the
tiny CLIP's zero-shot accuracy on the digits task with its hand-written
template, on validation and test, through the oracle's evaluation channel.
"""

from __future__ import annotations

import argparse
import sys

from sweep.data import few_shot, load_dataset
from sweep.models import ModelSpec, load_model
from sweep.oracle import ClipOracle
from sweep.prompted import PromptLayout


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sweep.launch", description=__doc__.splitlines()[0])
    parser.add_argument("spec", nargs="?", help="sweep specification (TOML); not supported yet")
    parser.add_argument("--shots", type=int, default=16)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    if args.spec:
        parser.error("sweep specifications are not supported yet; run without arguments")
    model = load_model(ModelSpec())
    task = few_shot(load_dataset("digits"), args.shots, args.seed)
    oracle = ClipOracle(model, task, PromptLayout(n_text=0))
    print(f"embedded default: model {model.spec.label} on {model.device}, data set {task.dataset}, "
          f"{args.shots} shots, seed {args.seed}")
    for split in ("val", "test"):
        ev = oracle.zero_shot(split)
        print(f"zero-shot {split:>4}: accuracy {ev.accuracies[0]:.2%}  loss {ev.losses[0]:.4f}  "
              f"({len(getattr(task, split))} images, template {task.template!r})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
