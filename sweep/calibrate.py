"""How much room a task leaves for prompt tuning: zero-shot versus white-box CoOp.

    python -m sweep.calibrate                      # the embedded default, 16 shots, seed 1

Zero-shot uses the data set's hand-written template. White-box CoOp learns
the text context through autograd on a glass-box oracle (full-batch Adam on
the k-shot training set, the step kept by validation accuracy; test is only
reported). This is the upper bound that black-box methods are compared with;
it is not a black-box method.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from sweep.data import few_shot, load_dataset
from sweep.models import EMBEDDED_MODEL, ModelSpec, load_model
from sweep.oracle import ClipOracle
from sweep.prompted import PromptLayout

__all__ = ["CoOpResult", "train_coop", "main"]


@dataclass(frozen=True)
class CoOpResult:
    best_step: int
    val_acc: float
    test_acc: float
    train_loss: float


def train_coop(oracle: ClipOracle, steps: int, lr: float, eval_every: int = 10,
               seed: int = 0, progress: bool = True) -> CoOpResult:
    """White-box CoOp on ``oracle`` (glass box): Adam on the context, kept by validation accuracy."""
    ctx = torch.as_tensor(oracle.initial_text(), dtype=torch.float64)
    if oracle.layout.text_init is None:  # CoOp's random initialisation, N(0, 0.02^2)
        ctx = torch.randn(ctx.shape, generator=torch.Generator().manual_seed(seed),
                          dtype=torch.float64) * 0.02
    ctx.requires_grad_(True)
    opt = torch.optim.Adam([ctx], lr=lr)
    best = (-1.0, 0, ctx.detach().clone(), float("nan"))
    for step in tqdm(range(1, steps + 1), desc="white-box CoOp", disable=not progress, leave=False):
        losses, grad, _ = oracle.gradient(text=ctx.detach().float().numpy()[None])
        opt.zero_grad()
        ctx.grad = torch.as_tensor(grad[0], dtype=torch.float64)
        opt.step()
        if step % eval_every == 0 or step == steps:
            val = float(oracle.evaluate_split("val", text=ctx.detach().float().numpy()[None]).accuracies[0])
            if val > best[0]:
                best = (val, step, ctx.detach().clone(), float(losses[0]))
    val_acc, step, best_ctx, loss = best
    test = oracle.evaluate_split("test", text=best_ctx.float().numpy()[None]).accuracies[0]
    return CoOpResult(best_step=step, val_acc=val_acc, test_acc=float(test), train_loss=loss)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sweep.calibrate", description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=EMBEDDED_MODEL, help="open_clip architecture (default: embedded)")
    parser.add_argument("--pretrained", default=None, help="open_clip pretrained tag")
    parser.add_argument("--checkpoint", default=None, help="local state-dict file")
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--shots", type=int, default=16)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--n-ctx", type=int, default=4, help="CoOp context tokens")
    parser.add_argument("--init", default=None, help="initialise the context from this phrase")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--lr", type=float, default=2e-2)
    parser.add_argument("--device", default=None)
    args = parser.parse_args(argv)

    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    spec = ModelSpec(name=args.model, pretrained=args.pretrained, checkpoint=args.checkpoint)
    model = load_model(spec, args.device)
    task = few_shot(load_dataset(args.dataset, args.data_root), args.shots, args.seed)
    layout = PromptLayout(n_text=args.n_ctx, text_init=args.init)
    oracle = ClipOracle(model, task, layout, glass_box=True)
    zs_val = oracle.zero_shot("val").accuracies[0]
    zs_test = oracle.zero_shot("test").accuracies[0]
    coop = train_coop(oracle, args.steps, args.lr, seed=args.seed)
    print(f"model {spec.label}, data set {task.dataset}, {args.shots} shots, seed {args.seed}, "
          f"{len(task.train)} train / {len(task.val)} val / {len(task.test)} test images")
    print(f"zero-shot ({task.template!r}):  val {zs_val:.2%}  test {zs_test:.2%}")
    print(f"white-box CoOp ({args.n_ctx} ctx, {args.steps} Adam steps at lr {args.lr}, "
          f"kept step {coop.best_step} by val):  val {coop.val_acc:.2%}  test {coop.test_acc:.2%}")
    print(f"room for prompt tuning on test: {100 * (coop.test_acc - zs_test):+.1f} points")
    return 0


if __name__ == "__main__":
    sys.exit(main())
