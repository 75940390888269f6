"""Pretrain the embedded tiny CLIP (``promptsweep-tiny``) on half of the digits.

The embedded default of promptsweep is a tiny open_clip CLIP (a 2-layer,
64-wide ViT on 32x32 images and a 2-layer, 64-wide text transformer; config in
``sweep/embedded/promptsweep-tiny.json``) trained by this module, contrastively
(the CLIP loss with a learnable logit scale), on the pretraining half of
scikit-learn's handwritten digits (:func:`sweep.data.load_pretraining_digits`).
The downstream few-shot task (:func:`sweep.data.load_digits_task`) is the
other half: no image is shared.

Why prompts matter on this model. Like web alt-text, the pretraining captions
come in two styles. Captions in the CLEAN templates name the digit shown
("the digit seven.", "a handwritten seven."); captions in the NOISY,
photo-style templates ("a photo of a {}.", "the number {}.", ...) name a
digit drawn at random, so the text tower learns that those phrasings carry no
information about the image. The downstream task's hand-written template,
``"a photo of the number {}."``, is never a caption, but it is made of the
noisy templates' words: its zero-shot accuracy is poor, and a prompt that
steers away from that phrasing (learned context vectors, or a search over
them) recovers most of the accuracy the image features allow. The images are
never shifted, so the image features stay good.

Measured on the shipped weights (seed 0), downstream test split (450 images):

- zero-shot, hand-written template: 0.4733 (``ZERO_SHOT_TEST_ACCURACY``,
  checked by ``tests/test_digits.py``); validation 0.4964;
- zero-shot, the clean caption "the digit {}.": 0.9422;
- white-box CoOp, 16 shots, few-shot seed 1, 4 context vectors ("X X X X
  {class}.") initialised from "a photo of the", full-batch Adam lr 2e-3,
  300 steps, the model's logit scale: 0.9467 (from N(0, 0.02^2): 0.9400);
- CMA-ES (pycma, population 20, sigma 1) over a 50-dimensional random
  subspace added to the 5 template words "a photo of the number": 0.5889 /
  0.7178 / 0.9244 / 0.9378 after 40 / 100 / 200 / 400 evaluations.

Seed 1 of the same recipe gives 0.5556 zero-shot and 0.9400 with CoOp.
Generic starting contexts are already good on this model (4 random
N(0, 0.02^2) vectors: about 0.92; 8 zero vectors: 0.82): the gap is the
hand-written phrasing, not the absence of a prompt.

Reproduce the shipped weights (about 1-3 minutes on 2 CPU cores)::

    HF_HUB_OFFLINE=1 python -m sweep.pretrain_tiny --seed 0 --out sweep/embedded/promptsweep-tiny.pt

Training is deterministic: a fixed seed, a numpy Generator for the batches and
captions, single-process data, ``torch.use_deterministic_algorithms`` and a
fixed number of torch threads. On this machine's torch build (2.14.1, x86_64)
the command writes a byte-identical file; on other CPUs or torch builds
floating-point kernels may round differently, and the accuracies then agree
within about a point rather than exactly.
"""

from __future__ import annotations

import argparse
import io
import math
import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from sweep.data import DIGIT_CLASSNAMES, Split, load_digits_task, load_pretraining_digits
from sweep.errors import ModelError
from sweep.oracle import EMBEDDED_CONFIG, EMBEDDED_WEIGHTS, register_embedded
from sweep.spec import EMBEDDED_MODEL

__all__ = [
    "CLEAN_TEMPLATES",
    "NOISY_TEMPLATES",
    "ZERO_SHOT_TEST_ACCURACY",
    "create_tiny",
    "encode_split",
    "pretrain",
    "zero_shot_accuracy",
]

#: Captions that name the digit shown.
CLEAN_TEMPLATES: tuple[str, ...] = (
    "the digit {}.",
    "a handwritten {}.",
    "a scan of a {}.",
    "a drawing of the digit {}.",
)
#: Photo-style captions that name a digit drawn uniformly at random: noise that
#: teaches the text tower to distrust this phrasing. None of them is the
#: downstream template (sweep.data.DIGITS_TEMPLATE).
NOISY_TEMPLATES: tuple[str, ...] = (
    "a photo of a {}.",
    "a photo of the {}.",
    "the number {}.",
    "a picture of the number {}.",
)

#: The recipe of the shipped weights. Longer training makes the text tower
#: more certain that photo-style phrasing is noise (lower zero-shot accuracy);
#: shorter training leaves weaker image features (a lower ceiling for prompts).
DEFAULT_SEED = 0
STEPS = 350
BATCH_SIZE = 128
LEARNING_RATE = 1e-3
WARMUP_STEPS = 20
MAX_LOGIT_SCALE = 100.0
#: Kernels may round differently with another thread count; fix it so that the
#: documented command reproduces the shipped file byte for byte.
NUM_THREADS = 2

#: Zero-shot test accuracy of the shipped weights with the hand-written template
#: (213 of 450 test images). With the clean caption "the digit {}." the same
#: weights reach 424/450 = 0.942: the room that prompts can recover.
ZERO_SHOT_TEST_ACCURACY = 213 / 450
#: The same on the full validation split (68 of 137 images).
ZERO_SHOT_VAL_ACCURACY = 68 / 137


def create_tiny(
    weights: str | Path | None = EMBEDDED_WEIGHTS,
) -> tuple[torch.nn.Module, Callable, Callable]:
    """Build the tiny CLIP in eval mode, with the given weights or randomly initialised.

    Args:
        weights: a state_dict saved by this module (the shipped file by
            default), or None for open_clip's random initialisation (seed it
            with ``torch.manual_seed`` first).

    Returns:
        ``(model, preprocess, tokenizer)``: a float32 ``open_clip.CLIP`` on the
        CPU, the eval image transform (PIL image -> tensor) and the tokenizer.

    Raises:
        ModelError: the weights file is missing or does not fit the config.
    """
    import open_clip

    register_embedded()
    model, _, preprocess = open_clip.create_model_and_transforms(EMBEDDED_MODEL, pretrained=None)
    if weights is not None:
        path = Path(weights)
        if not path.is_file():
            raise ModelError(f"no tiny CLIP weights at {path}; run python -m sweep.pretrain_tiny")
        state = torch.load(path, map_location="cpu", weights_only=True)
        try:
            model.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
        except RuntimeError as exc:
            raise ModelError(f"{path} does not fit {EMBEDDED_CONFIG.name}: {exc}") from exc
    model.eval()
    return model, preprocess, open_clip.get_tokenizer(EMBEDDED_MODEL)


def encode_split(split: Split, preprocess: Callable) -> torch.Tensor:
    """Every image of ``split`` through ``preprocess``, as one (n, 3, H, W) tensor."""
    return torch.stack([preprocess(split.load(i)) for i in range(len(split))])


@torch.no_grad()
def zero_shot_accuracy(model: torch.nn.Module, preprocess: Callable, tokenizer: Callable,
                       split: Split, classnames: Sequence[str], template: str) -> float:
    """Zero-shot accuracy: each image gets the class whose prompt is most similar.

    Uses the model's own ``encode_image`` / ``encode_text`` (no shortcuts), so
    an oracle built on the same model must reproduce it exactly.
    """
    images = F.normalize(model.encode_image(encode_split(split, preprocess)), dim=-1)
    texts = F.normalize(model.encode_text(tokenizer([template.format(c) for c in classnames])),
                        dim=-1)
    pred = (images @ texts.T).argmax(dim=-1).numpy()
    return float(np.mean(pred == split.labels))


def _encode_text_cut(model: torch.nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """``model.encode_text`` on sequences cut after the last end-of-text token.

    Exact (the mask is causal, so nothing after the end-of-text token reaches
    it) and about 8 times cheaper than the 77-token pass while training.
    """
    length = int(tokens.argmax(dim=-1).max()) + 1
    tokens = tokens[:, :length]
    x = model.token_embedding(tokens) + model.positional_embedding[:length]
    x = model.transformer(x, attn_mask=model.attn_mask[:length, :length])
    x = model.ln_final(x)
    x = x[torch.arange(x.shape[0]), tokens.argmax(dim=-1)]
    proj = model.text_projection
    return proj(x) if isinstance(proj, torch.nn.Linear) else x @ proj


def _caption_table(tokenizer: Callable) -> torch.Tensor:
    """Tokens of every (template, class) caption: (n_templates, n_classes, 77)."""
    templates = CLEAN_TEMPLATES + NOISY_TEMPLATES
    return torch.stack([tokenizer([t.format(c) for c in DIGIT_CLASSNAMES]) for t in templates])


def pretrain(seed: int = DEFAULT_SEED, steps: int = STEPS,
             log: Callable[[str], None] | None = print) -> torch.nn.Module:
    """Pretrain the tiny CLIP on the pretraining half of the digits.

    Each step draws ``BATCH_SIZE`` distinct images and, for each, a template
    uniformly from ``CLEAN_TEMPLATES + NOISY_TEMPLATES``; a clean caption names
    the image's digit, a noisy one a uniformly random digit. Loss: the
    symmetric CLIP cross-entropy with a learnable logit scale (clamped to
    ``MAX_LOGIT_SCALE``). Adam, linear warm-up then cosine decay.

    Args:
        seed: seeds the initialisation (torch) and the batches and captions (numpy).
        steps: optimisation steps.
        log: called with a progress line every 50 steps; None for silence.

    Returns:
        The trained model, in eval mode.
    """
    torch.manual_seed(seed)
    model, preprocess, tokenizer = create_tiny(weights=None)
    rng = np.random.default_rng(seed)

    images, labels = load_pretraining_digits()
    pixels = encode_split(Split(list(images), labels), preprocess)
    table = _caption_table(tokenizer)
    n_templates, n_classes = table.shape[:2]
    n_clean = len(CLEAN_TEMPLATES)

    optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
    model.train()
    targets = torch.arange(BATCH_SIZE)
    for step in range(steps):
        warmup = min(1.0, (step + 1) / WARMUP_STEPS)
        lr_factor = warmup * 0.5 * (1 + math.cos(math.pi * step / steps))
        for group in optimizer.param_groups:
            group["lr"] = LEARNING_RATE * lr_factor
        batch = rng.choice(len(labels), size=BATCH_SIZE, replace=False)
        template = rng.integers(0, n_templates, size=BATCH_SIZE)
        random_digit = rng.integers(0, n_classes, size=BATCH_SIZE)
        named = np.where(template < n_clean, labels[batch], random_digit)
        tokens = table[torch.as_tensor(template), torch.as_tensor(named)]

        image_features = F.normalize(model.encode_image(pixels[batch]), dim=-1)
        text_features = F.normalize(_encode_text_cut(model, tokens), dim=-1)
        logits = model.logit_scale.exp() * image_features @ text_features.T
        loss = 0.5 * (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0.0, math.log(MAX_LOGIT_SCALE))
        if log is not None and (step % 50 == 0 or step == steps - 1):
            log(f"step {step:4d}  loss {loss.item():.4f}  "
                f"logit scale {model.logit_scale.exp().item():.2f}")
    model.eval()
    return model


def _save_atomically(state: dict[str, torch.Tensor], out: Path) -> None:
    """``torch.save`` to ``out`` via a temporary file, with content independent of paths.

    torch.save names the archive's root folder after the file it writes; saving
    to a buffer first names it ``archive`` always, so the bytes do not depend on
    the output or temporary file's name.
    """
    buffer = io.BytesIO()
    torch.save(state, buffer)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(buffer.getvalue())
        # mkstemp creates the file private (0600); give it the usual permissions.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: pretrain, save the state_dict, print the downstream zero-shot accuracy."""
    parser = argparse.ArgumentParser(prog="python -m sweep.pretrain_tiny",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED,
                        help="training seed (default %(default)s)")
    parser.add_argument("--out", type=Path, default=EMBEDDED_WEIGHTS,
                        help="where to write the state_dict (default: the shipped file)")
    args = parser.parse_args(argv)

    torch.set_num_threads(NUM_THREADS)
    torch.use_deterministic_algorithms(True)
    model = pretrain(seed=args.seed)
    _save_atomically(model.state_dict(), args.out)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB)")

    # Evaluate the saved file, not the in-memory model: that is what ships.
    model, preprocess, tokenizer = create_tiny(args.out)
    task = load_digits_task()
    for name, split in (("val", task.val), ("test", task.test)):
        acc = zero_shot_accuracy(model, preprocess, tokenizer, split, task.classnames,
                                 task.template)
        print(f"zero-shot {name} accuracy with {task.template!r}: {acc:.6f}")
    # The clean caption style bounds what a prompt can recover from these features.
    clean = CLEAN_TEMPLATES[0]
    acc = zero_shot_accuracy(model, preprocess, tokenizer, task.test, task.classnames, clean)
    print(f"zero-shot test accuracy with the pretraining caption {clean!r}: {acc:.6f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
