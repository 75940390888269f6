"""The oracle on an accelerator, in each precision, against the CPU in fp32: one script, no Ray.

    python -m bench.gpu_check                       # CUDA, ViT-B-32 with random weights
    python -m bench.gpu_check --device cpu --model promptsweep-tiny --draws 2 --out /tmp/check.json

It needs torch and open_clip (``pip install open_clip_torch`` on a machine that
has only torch), not Ray, and takes about 2 minutes on one GPU, most of it the
CPU reference. One set of weights is built once on the CPU (seeded) and copied
to the device, and the logit scale is set to CLIP's 100. For each precision the
device supports (fp32, bf16, fp16; the image tower's, ``sweep.oracle``):

- ``losses``: the largest difference of the losses of the same candidates to
  the CPU's fp32 ones, text-only (30 candidates, 8 context tokens) and
  text + visual (2 candidates, 8 + 5 tokens);
- ``zeroth_order``: CBBT's prompt (one context token from "a"), sphere
  directions of length max(1/d, 1e-3) (1/512 on ViT-B), q = 64, ``--draws``
  draws: the mean cosine of the estimate to the CPU's fp32 autograd gradient,
  and the error of the finite differences relative to the CPU's fp32 ones;
- ``speed``: candidates/s and peak memory at population 30, text-only and
  text + visual (peak allocated by torch on a GPU; on a CPU, the process's
  peak resident memory so far, which only grows).

Figures go to ``bench/results/gpu-check.json`` (``--out`` elsewhere).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import math
import sys
import time

import numpy as np
import torch

from bench import common

SHOTS, CLASSES, POP, VISUAL_POP, Q = 16, 10, 30, 2, 64
N_TEXT, N_VISUAL = 8, 5


def _precisions(device: str) -> list[str]:
    if device.startswith("cuda") and not torch.cuda.is_bf16_supported():
        return ["fp32", "fp16"]
    return ["fp32", "bf16", "fp16"]


def _models(name: str, device: str):
    """The CPU model, and a function giving the same weights on ``device`` in a precision."""
    from sweep.oracle import load_model
    from sweep.spec import ModelSpec

    torch.manual_seed(0)  # random weights for an architecture without a checkpoint
    cpu = load_model(ModelSpec(name=name), "cpu")
    cpu.model.logit_scale.data.fill_(math.log(100.0))
    on_device = copy.deepcopy(cpu.model).to(device)
    return cpu, lambda precision: dataclasses.replace(
        cpu, model=on_device, device=torch.device(device), precision=precision)


def _image_size(model) -> int:
    size = getattr(model.model.visual, "image_size", 224)
    return int(size[0] if isinstance(size, (tuple, list)) else size)


def _prompts(oracle, pop: int, seed: int) -> tuple[np.ndarray, np.ndarray | None]:
    rng = np.random.default_rng(seed)
    text = rng.normal(0, 0.02, size=(pop, *oracle.text_shape)).astype(np.float32)
    if not oracle.layout.n_visual:
        return text, None
    return text, rng.normal(0, 0.5, size=(pop, *oracle.visual_shape)).astype(np.float32)


def _zeroth_order(oracle, x: np.ndarray, directions: list[np.ndarray], step: float,
                  grad: np.ndarray) -> tuple[np.ndarray, float]:
    """Finite differences (draws, q) along the directions, and the estimate's mean cosine to grad."""
    diffs, cosines = [], []
    for u in directions:
        points = np.concatenate([x.reshape(1, -1), x.reshape(1, -1) + step * u])
        losses = oracle.evaluate(text=points.reshape(-1, *x.shape)).losses
        diff = losses[1:] - losses[0]
        estimate = (grad.size / step) * (diff[:, None] * u).mean(axis=0)
        cosines.append(float(estimate @ grad / (np.linalg.norm(estimate) * np.linalg.norm(grad))))
        diffs.append(diff)
    return np.array(diffs), float(np.mean(cosines))


def _speed(model, task, layout, device: str) -> dict:
    from sweep.oracle import ClipOracle

    oracle = ClipOracle(model, task, layout)
    text, vis = _prompts(oracle, POP, seed=3)
    oracle.evaluate(text=text[:1], visual=None if vis is None else vis[:1])  # caches, not timed
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    seconds, repeats, _ = common.timed(lambda: oracle.evaluate(text=text, visual=vis), device,
                                       min_seconds=2.0)
    memory = (torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda")
              else common.rss_mb()[1])
    return {"candidates_per_s": POP / seconds, "seconds_per_request": seconds, "repeats": repeats,
            "peak_memory_mb": memory,
            "memory_kind": "torch peak allocated" if device.startswith("cuda")
            else "process peak resident (cumulative)"}


def check(model_name: str, device: str, draws: int) -> dict:
    from sweep.oracle import ClipOracle, PromptLayout

    cpu, on = _models(model_name, device)
    task = common.random_task(CLASSES, SHOTS, _image_size(cpu))
    text_only = PromptLayout(n_text=N_TEXT)
    with_visual = PromptLayout(n_text=N_TEXT, n_visual=N_VISUAL)
    cbbt = PromptLayout(n_text=1, text_init="a")

    started = time.perf_counter()
    ref = {layout: ClipOracle(cpu, task, layout) for layout in (text_only, with_visual)}
    inputs = {text_only: _prompts(ref[text_only], POP, seed=1),
              with_visual: _prompts(ref[with_visual], VISUAL_POP, seed=2)}
    ref_losses = {layout: ref[layout].evaluate(text=t, visual=v).losses
                  for layout, (t, v) in inputs.items()}
    glass = ClipOracle(cpu, task, cbbt, glass_box=True)
    x = glass.initial_text()
    grad = glass.gradient(text=x[None])[1].reshape(-1)
    step = max(1 / grad.size, 1e-3)  # CBBT's sphere radius
    rng = np.random.default_rng(0)
    directions = [rng.normal(size=(Q, grad.size)) for _ in range(draws)]
    directions = [u / np.linalg.norm(u, axis=1, keepdims=True) for u in directions]
    ref_diffs, ref_cos = _zeroth_order(glass, x, directions, step, grad)
    cpu_seconds = time.perf_counter() - started
    print(f"CPU fp32 reference: {cpu_seconds:.0f} s; sphere cosine {ref_cos:.3f}", file=sys.stderr)

    out: dict = {"model": model_name, "device": device, "cpu_reference_s": cpu_seconds,
                 "workload": {"classes": CLASSES, "shots": SHOTS, "population": POP,
                              "visual_population_compared": VISUAL_POP, "n_text": N_TEXT,
                              "n_visual": N_VISUAL, "q": Q, "draws": draws, "step": step,
                              "logit_scale": 100.0},
                 "cpu_fp32": {"sphere_cosine": ref_cos}, "precisions": {}}
    for precision in _precisions(device):
        model = on(precision)
        losses = {}
        for name, layout in (("text_only", text_only), ("text_visual", with_visual)):
            t, v = inputs[layout]
            got = ClipOracle(model, task, layout).evaluate(text=t, visual=v).losses
            losses[name] = float(np.max(np.abs(got - ref_losses[layout])))
        diffs, cos = _zeroth_order(ClipOracle(model, task, cbbt), x, directions, step, grad)
        fd_error = float(np.sqrt(np.mean((diffs - ref_diffs) ** 2) / np.mean(ref_diffs ** 2)))
        speed = {name: _speed(model, task, layout, device)
                 for name, layout in (("text_only", text_only), ("text_visual", with_visual))}
        out["precisions"][precision] = {
            "losses_max_abs_difference": losses,
            "zeroth_order": {"sphere_cosine": cos, "cosine_minus_cpu_fp32": cos - ref_cos,
                             "finite_difference_relative_error": fd_error},
            "speed": speed}
        print(f"{precision}: losses off by {losses['text_only']:.2e} / "
              f"{losses['text_visual']:.2e}, cosine {cos:.3f}, finite differences "
              f"{fd_error:.1%} off, {speed['text_only']['candidates_per_s']:.0f} / "
              f"{speed['text_visual']['candidates_per_s']:.1f} candidates/s", file=sys.stderr)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu_check",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="the accelerator (default: cuda)")
    parser.add_argument("--model", default="ViT-B-32", help="open_clip model (random weights)")
    parser.add_argument("--draws", type=int, default=10, help="direction draws of q = 64")
    parser.add_argument("--out", help="result file (default bench/results/gpu-check.json)")
    args = parser.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("error: no CUDA device; use --device cpu to try the check here", file=sys.stderr)
        return 2
    result = check(args.model, args.device, args.draws)
    common.write("gpu-check", {"machine": common.machine(args.device), **result},
                 None if args.out is None else common.Path(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
