"""Oracle throughput against the straightforward loop, side by side in one run.

    python -m bench.oracle                       # everything (about 50 min on 2 CPU cores)
    python -m bench.oracle --only main           # the two headline ratios
    python -m bench.oracle --device cuda         # the same on a GPU (mixed precision)

The workload is BPT-VLM's: ViT-B-32 with random weights (speed does not depend on
the weights), 8 text context tokens, 5 visual tokens, 16 shots x 10 classes,
population 30. Our oracle (``sweep.oracle.ClipOracle``) is timed against a
*reference loop* written the way the published implementations evaluate a
population: one candidate per forward pass, the full 77-token context, image
features computed once when only the text is prompted and per candidate
(all 160 images in one batch) when the image is prompted. Both must give the
same losses (to 1e-4); the first candidates of the population are compared.

Each measurement runs in its own process (``--measure``), so its peak memory is
its own. Image features are encoded from random images for 10 classes; for 100
and 1,000 classes (1,600 and 16,000 images) the cached image features of both
implementations are set to the same random unit vectors instead, because a
text-only query never recomputes them and encoding 16,000 images would take
20 minutes here. Figures go to ``bench/results/oracle.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from bench import common

N_TEXT, N_VISUAL, SHOTS = 8, 5, 16
TOLERANCE = 1e-4


# ---------------------------------------------------------------------- the task
def _setup(model_name: str, classes: int, device: str, encoded: bool):
    from sweep.oracle import load_model
    from sweep.spec import ModelSpec

    torch.manual_seed(0)
    model = load_model(ModelSpec(name=model_name), device)
    # Without encoding, the images are never read: the image features are set directly
    # (see the module docstring).
    return model, common.random_task(classes, SHOTS, 224 if encoded else None)


def _prompts(pop: int, model, visual: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """Candidate i is the same whatever the population (separate streams, drawn in order)."""
    width = model.model.token_embedding.weight.shape[1]
    text = np.random.default_rng(1).normal(0, 0.02, size=(pop, N_TEXT, width)).astype(np.float32)
    if not visual:
        return text, None
    vis_width = model.model.visual.class_embedding.shape[0]
    vis = np.random.default_rng(2).normal(0, 0.5, size=(pop, N_VISUAL, vis_width)).astype(np.float32)
    return text, vis


def _injected_features(m: int, dim: int, device: str) -> torch.Tensor:
    g = torch.Generator().manual_seed(2)
    return F.normalize(torch.randn(m, dim, generator=g), dim=-1).to(device)


# ---------------------------------------------------------------------- the two implementations
def measure_ours(model, task, pop: int, visual: bool, device: str, encoded: bool) -> dict:
    from sweep.oracle import ClipOracle, PromptLayout

    oracle = ClipOracle(model, task, PromptLayout(n_text=N_TEXT, n_visual=N_VISUAL if visual else 0))
    if not encoded:
        oracle.images.set_features(task.train, _injected_features(len(task.train), _embed_dim(model),
                                                                  device), oracle.precision)
    text, vis = _prompts(pop, model, visual)
    oracle.evaluate(text=text[:1], visual=None if vis is None else vis[:1])  # caches, not timed
    seconds, repeats, ev = common.timed(lambda: oracle.evaluate(text=text, visual=vis), device)
    return {"seconds": seconds, "repeats": repeats, "losses": ev.losses.tolist()}


def _embed_dim(model) -> int:
    proj = model.model.text_projection
    return proj.shape[1] if isinstance(proj, torch.Tensor) else proj.out_features


class ReferenceLoop:
    """One candidate per forward, full 77-token context: how the published code evaluates.

    Written with open_clip's own modules, independently of ``sweep.oracle.prompted``.
    """

    def __init__(self, model, task, device: str) -> None:
        self.clip, self.device = model.model, device
        prompts = [" ".join(["X"] * N_TEXT) + f" {name}." for name in task.classnames]
        self.tokens = model.tokenizer(prompts).to(device)  # (C, 77)
        self.eot = self.tokens.argmax(dim=-1)
        self.labels = torch.as_tensor(task.train.labels, device=device)
        self.preprocess, self.task = model.preprocess, task
        self._images: torch.Tensor | None = None

    def images(self) -> torch.Tensor:
        if self._images is None:
            split = self.task.train
            self._images = torch.stack([self.preprocess(split.load(i)) for i in range(len(split))])
            self._images = self._images.to(self.device)
        return self._images

    def text_features(self, ctx: torch.Tensor) -> torch.Tensor:
        clip = self.clip
        x = clip.token_embedding(self.tokens)
        x = torch.cat([x[:, :1], ctx.expand(len(x), -1, -1), x[:, 1 + N_TEXT:]], dim=1)
        x = clip.transformer(x + clip.positional_embedding, attn_mask=clip.attn_mask)
        x = clip.ln_final(x)[torch.arange(len(x)), self.eot]
        return F.normalize(x @ clip.text_projection, dim=-1)

    def image_features(self, vis: torch.Tensor | None) -> torch.Tensor:
        if vis is None:
            return self.clip.encode_image(self.images(), normalize=True)
        visual = self.clip.visual
        x = visual.conv1(self.images()).flatten(2).transpose(1, 2)
        cls = visual.class_embedding.expand(len(x), 1, -1)
        x = torch.cat([cls, x], dim=1) + visual.positional_embedding
        x = torch.cat([x[:, :1], vis.expand(len(x), -1, -1), x[:, 1:]], dim=1)
        x = visual.transformer(visual.ln_pre(x))
        pooled, _ = visual._pool(x)
        return F.normalize(pooled @ visual.proj, dim=-1)

    def loss(self, img: torch.Tensor, ctx: torch.Tensor) -> float:
        logits = self.clip.logit_scale.exp() * img @ self.text_features(ctx).T
        return float(F.cross_entropy(logits.float(), self.labels))


def measure_reference(model, task, count: int, visual: bool, device: str, encoded: bool) -> dict:
    ref = ReferenceLoop(model, task, device)
    text, vis = _prompts(count, model, visual)
    text_t = torch.as_tensor(text, device=device)
    vis_t = None if vis is None else torch.as_tensor(vis, device=device)
    autocast = torch.autocast("cuda", dtype=torch.float16, enabled=device.startswith("cuda"))
    with torch.no_grad(), autocast:
        fixed = None
        if not visual:  # once, outside the timing, as the published code does
            fixed = (ref.image_features(None) if encoded
                     else _injected_features(len(task.train), _embed_dim(model), device))
        elif encoded:
            ref.images()  # preprocessing: once, outside the timing
        common.sync(device)
        t0 = time.perf_counter()
        losses = [ref.loss(fixed if vis_t is None else ref.image_features(vis_t[i:i + 1]), text_t[i:i + 1])
                  for i in range(count)]
        common.sync(device)
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "repeats": 1, "losses": losses}


def measure_efficiency(model, task, pop: int, device: str) -> dict:
    """FLOP rate of our text tower against a 2048^3 matrix product on the same threads."""
    from torch.utils.flop_counter import FlopCounterMode

    from sweep.oracle import PromptedCLIP, PromptLayout

    n = 2048
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    torch.mm(a, b)
    gemm_s, _, _ = common.timed(lambda: torch.mm(a, b), device, min_seconds=2.0, max_repeats=20)
    prompted = PromptedCLIP(model.model, model.tokenizer, task.classnames, PromptLayout(n_text=N_TEXT))
    ctx = torch.as_tensor(_prompts(pop, model, False)[0], device=device)
    ref = ReferenceLoop(model, task, device)
    with torch.no_grad():
        rates = {}
        for name, fn in (("ours", lambda: prompted.text_features(ctx)),
                         ("reference", lambda: ref.text_features(ctx[:1]))):
            with FlopCounterMode(display=False) as counter:
                fn()
            seconds, _, _ = common.timed(fn, device)
            rates[name] = {"flops": counter.get_total_flops(), "seconds": seconds,
                           "gflops_per_s": counter.get_total_flops() / seconds / 1e9}
    gemm = 2 * n**3 / gemm_s / 1e9
    return {"gemm_gflops_per_s": gemm, "text_tower": rates,
            "efficiency": rates["ours"]["gflops_per_s"] / gemm,
            "reference_efficiency": rates["reference"]["gflops_per_s"] / gemm}


def run_measurement(spec: dict) -> dict:
    """One measurement in this process: ``spec`` has impl, visual, classes, pop, device, model."""
    torch.set_num_threads(spec["threads"])
    device = spec["device"]
    encoded = spec["classes"] * SHOTS <= 160
    model, task = _setup(spec["model"], spec["classes"], device, encoded)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    impl = spec["impl"]
    if impl == "efficiency":
        out = measure_efficiency(model, task, spec["pop"], device)
    elif impl == "ours":
        out = measure_ours(model, task, spec["pop"], spec["visual"], device, encoded)
    else:
        out = measure_reference(model, task, spec["pop"], spec["visual"], device, encoded)
    out.update(spec, images=len(task.train), image_features="encoded" if encoded else "set",
               peak_rss_mb=common.peak_rss_mb())
    if "seconds" in out:
        out["candidates_per_s"] = spec["pop"] / out["seconds"]
    if device.startswith("cuda"):
        out["cuda_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return out


# ---------------------------------------------------------------------- the plan
def plan(only: str | None) -> list[dict]:
    """(impl, visual, classes, pop) of every measurement; ``pop`` is the count timed for the reference."""
    main = [("ours", False, 10, 30), ("reference", False, 10, 5),
            ("ours", True, 10, 30), ("reference", True, 10, 2)]
    efficiency = [("efficiency", False, 10, 30)]
    scaling = [("ours", False, c, p) for c in (10, 100, 1000) for p in (1, 8, 30, 256) if (c, p) != (10, 30)]
    scaling += [("reference", False, 100, 3), ("reference", False, 1000, 1),
                ("ours", True, 10, 1), ("ours", True, 10, 8)]
    memory = [("ours", False, 1000, 256)]  # the largest request: its peak memory
    parts = {"main": main, "efficiency": efficiency, "scaling": scaling, "memory": memory}
    chosen = [parts[only]] if only else [main, efficiency, scaling]
    return [dict(impl=i, visual=v, classes=c, pop=p) for part in chosen for (i, v, c, p) in part]


def summarise(rows: list[dict]) -> dict:
    def find(impl, visual, classes, pop=None):
        for r in rows:
            if (r["impl"], r["visual"], r["classes"]) == (impl, visual, classes) and pop in (None, r["pop"]):
                return r
        return None

    def compare(ours, ref):
        """Speed-up, and the losses of the candidates both evaluated (the first ones)."""
        k = len(ref["losses"])
        diff = float(np.max(np.abs(np.subtract(ours["losses"][:k], ref["losses"]))))
        return {"speedup": ours["candidates_per_s"] / ref["candidates_per_s"],
                "max_loss_difference": diff, "losses_equal": diff <= TOLERANCE}

    summary = {}
    for visual, name in ((False, "text"), (True, "text+visual")):
        ours, ref = find("ours", visual, 10, 30), find("reference", visual, 10)
        if ours and ref:
            summary[name] = {"ours_per_s": ours["candidates_per_s"], "reference_per_s": ref["candidates_per_s"],
                             **compare(ours, ref),
                             "ours_peak_rss_mb": ours["peak_rss_mb"], "reference_peak_rss_mb": ref["peak_rss_mb"]}
    for c in (100, 1000):
        ours, ref = find("ours", False, c, 30), find("reference", False, c)
        if ours and ref:
            summary[f"text, {c} classes"] = compare(ours, ref)
    eff = find("efficiency", False, 10)
    if eff:
        summary["efficiency"] = eff["efficiency"]
    return summary


def _table(rows: list[dict]) -> str:
    lines = ["impl       prompts      classes  cands   s/request  cand/s   us/(class*cand)  peak MB"]
    for r in rows:
        if r["impl"] == "efficiency":
            continue
        per = r["seconds"] / (r["pop"] * r["classes"]) * 1e6
        lines.append(f"{r['impl']:<10} {'text+visual' if r['visual'] else 'text':<12} {r['classes']:>7} "
                     f"{r['pop']:>6} {r['seconds']:>11.3f} {r['candidates_per_s']:>7.2f} {per:>16.1f} "
                     f"{r['peak_rss_mb']:>8.0f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.oracle", description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--model", default="ViT-B-32", help="open_clip model name (random weights)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--only", choices=("main", "efficiency", "scaling", "memory"))
    parser.add_argument("--out", help="result file (default bench/results/oracle[-cuda].json)")
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if common.answer_child(args.measure, run_measurement):
        return 0
    rows = []
    for spec in plan(args.only):
        spec.update(device=args.device, model=args.model, threads=args.threads)
        print(f"measuring {spec['impl']} {'text+visual' if spec['visual'] else 'text'} "
              f"{spec['classes']} classes x {spec['pop']} candidates ...", file=sys.stderr, flush=True)
        rows.append(common.child("bench.oracle", spec))
    summary = summarise(rows)
    print(_table(rows))
    print(json.dumps(summary, indent=2))
    name = "oracle" + ("-cuda" if args.device.startswith("cuda") else "") + (f"-{args.only}" if args.only else "")
    common.write(name, {"machine": common.machine(args.device), "summary": summary, "measurements": rows},
                 None if args.out is None else Path(args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
