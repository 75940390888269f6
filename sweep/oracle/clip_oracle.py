"""The black box: a CLIP that scores candidate prompts on a k-shot training set.

Methods see losses, accuracies and (on request) output features; nothing
else. Queries are counted by the oracle's ``QueryMeter`` (``sweep.budget``),
the same meter the pooled oracle uses. Two channels:

- ``evaluate``: the training set, counted in every unit of ``sweep.budget``
  and refused with ``BudgetExceededError`` before any computation when the
  budget would be exceeded; optionally on augmented views of its images
  (``views``, ``sweep.oracle.augment``), each counted as the image it shows;
- ``evaluate_split`` and ``zero_shot``: validation and test, counted apart in
  ``eval_used`` and never against the budget. They are for the trial loop's
  checkpoints, never for a method.

Glass-box mode (``glass_box=True``, local models only) adds ``gradient``: the
true gradient of the training loss through autograd, for checking estimators
and for white-box CoOp as an upper bound.

Prompts cross this boundary as arrays of shape (n, *text_shape) and
(n, *visual_shape), one row per candidate (numpy or torch).

Images come from an ``ImageStore`` (``sweep.oracle.images``): decoded once per
node, and their prompt-free features or patch embeddings kept on the device
under a budget shared by every oracle of the process.

Precision. The image tower runs in the model's ``precision`` (fp32, or bf16 /
fp16 autocast); the text tower, the logits and the losses always run in fp32,
from features upcast to fp32 and normalised there. The text tower stays in
fp32 because the zeroth-order methods perturb the context by steps of about
1/512, below bf16's resolution of 2^-8. With the embedded model at CLIP's
logit scale of 100 and that step (tests/test_precision.py), the loss
differences of an fp32 text tower beside a bf16 image tower are within 2.7%
of fp32's (fp16: 0.2%) and the sphere estimate's cosine to the true gradient
is unchanged (0.704); with the text tower and the logits in the same autocast,
as this oracle ran on CUDA before, they are off by 6.6 times their size in
bf16 (0.72 in fp16) and the cosine drops to 0.28 (0.62). In fp32 a batched evaluation equals the
one-at-a-time one to 1e-5 and runs are bit-for-bit repeatable on one
machine. In bf16 or fp16 the image features carry the precision's rounding
(relative 2^-8 or 2^-11), and batching may change it (kernels tile batches
differently), so batched and one-at-a-time image features agree only to that
rounding; on a CPU runs stay repeatable, on a GPU only as far as its kernels
are deterministic.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import sys

import numpy as np
import torch
import torch.nn.functional as F

from methods.base import Evaluation
from sweep.budget import BudgetSpec, Metered, QueryMeter
from sweep.data import FewShot, PixelCache, Split
from sweep.errors import ConfigError, ModelError
from sweep.oracle.images import DeviceCache, ImageStore, default_cache_bytes
from sweep.oracle.models import DTYPES, LoadedModel
from sweep.oracle.prompted import PromptedCLIP
from sweep.oracle.requests import PromptLayout, check_subset, check_views, count_candidates

__all__ = ["ClipOracle", "check_subset", "count_candidates"]

_SPLITS = ("val", "test")


def _trim_heap() -> None:
    """Give freed heap memory back to the system (glibc; elsewhere nothing to do).

    Large tensors allocated and freed in turn, one per chunk, leave glibc's heap
    holding the freed memory: a request of 256 candidates x 1,000 classes x
    16,000 images peaked at 8.4 GB instead of 2 GB. ``malloc_trim`` returns it
    for well under a millisecond per call.
    """
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


_MALLOC_TRIM = (getattr(ctypes.CDLL(ctypes.util.find_library("c")), "malloc_trim", None)
                if sys.platform.startswith("linux") else None)


def _clipped_std(x: torch.Tensor, rounds: int = 5, k: float = 3.0) -> float:
    """Std of x after ``rounds`` of discarding entries beyond k standard deviations."""
    x = x.flatten().double()
    for _ in range(rounds):
        mean, std = x.mean(), x.std()
        x = x[(x - mean).abs() <= k * std]
    return float(x.std())


class ClipOracle(Metered):
    """A CLIP with a prompt layout and a few-shot task, answering batched prompt queries.

    Args:
        model: a loaded CLIP (``sweep.oracle.load_model``).
        task: the few-shot task (``sweep.data.few_shot``).
        layout: where the prompts go.
        budget: the query budget (default: unlimited, counted in candidate evaluations).
        glass_box: allow ``gradient`` (true gradients through autograd).
        max_batch_tokens: tokens per transformer forward; bounds memory (2**14 tokens: about
            0.6 GB of activations in a ViT-B image tower, with no loss of speed on a CPU).
        max_logits: logits (candidates x images x classes) computed at once; bounds
            memory (2**24 floats: 64 MB).
        images: where the images come from and what of them is kept on the device,
            shared by the oracles of a process (an actor's); default: a private store
            on the node's pixel folder with the device's default budget.
    """

    def __init__(self, model: LoadedModel, task: FewShot, layout: PromptLayout,
                 budget: BudgetSpec | None = None, *, glass_box: bool = False,
                 max_batch_tokens: int = 1 << 14, max_logits: int = 1 << 24,
                 images: ImageStore | None = None) -> None:
        self.model = model
        self.task = task
        self.layout = layout
        self.meter = QueryMeter(budget, len(task.train), task.num_classes)
        self.glass_box = glass_box
        self.device = model.device
        #: the image tower's precision ("fp32", "bf16", "fp16"): the layout's (a method's
        #: default), else the model's; the rest is always fp32.
        self.precision = layout.precision or model.precision
        if images is None:
            images = ImageStore(model, PixelCache(None, model.pixels[0]),
                                DeviceCache(default_cache_bytes(model.device)))
        self.images = images
        self.max_logits = max_logits
        self.prompted = PromptedCLIP(model.model, model.tokenizer, task.classnames, layout,
                                     max_batch_tokens=max_batch_tokens, template=task.template)
        self._labels = {
            name: torch.as_tensor(split.labels, device=self.device)
            for name, split in (("train", task.train), ("val", task.val), ("test", task.test),
                                ("dev", task.dev)) if split is not None
        }
        self._pieces: dict[str, Split] = {}  # ranges of val or test images, by name

    # --------------------------------------------------------------- shapes
    @property
    def text_shape(self) -> tuple[int, ...]:
        return self.prompted.text_shape

    @property
    def visual_shape(self) -> tuple[int, ...]:
        return self.prompted.visual_shape

    def initial_text(self) -> np.ndarray:
        """The starting context (``layout.text_init`` embeddings, or zeros): text_shape."""
        return self.prompted.initial_text().cpu().numpy()

    def initial_visual(self) -> np.ndarray:
        return self.prompted.initial_visual().cpu().numpy()

    def model_stats(self) -> dict[str, object]:
        """Weight and activation statistics that scale random subspaces (methods.subspace.ModelStats).

        Hidden-state stds are taken at the input of every block, for the
        class prompts with the initial context (text) and for the training
        images without visual prompts (vision), after five rounds of 3-sigma
        clipping (BBTv2). Reading them is not a query: it needs no prompt.
        """
        prompted = self.prompted
        stats: dict[str, object] = {
            "token_embedding_std": float(prompted._text.token_embedding.weight.std()),
            "patch_weight_mean": 0.0, "patch_weight_std": 0.0, "patch_fan_in": 0,
            "text_hidden_std": (), "visual_hidden_std": (),
        }
        with torch.no_grad():
            ctx = torch.as_tensor(self.initial_text(), device=self.device)[None] if self.layout.n_text else None
            stats["text_hidden_std"] = tuple(_clipped_std(h) for h in prompted.text_hidden_states(ctx))
            if prompted.is_vit:
                conv = self.model.model.visual.conv1.weight
                stats.update(patch_weight_mean=float(conv.mean()), patch_weight_std=float(conv.std()),
                             patch_fan_in=int(conv[0].numel()))
                # the first batch of training images (all of them, up to 256)
                images = next(self.images.batches(self.task.train))
                stats["visual_hidden_std"] = tuple(
                    _clipped_std(h) for h in prompted.visual_hidden_states(images))
        return stats

    @property
    def train_size(self) -> int:
        """Images in the k-shot training set (the default request size)."""
        return len(self.task.train)

    @property
    def num_classes(self) -> int:
        return self.task.num_classes

    # --------------------------------------------------------------- inputs
    def _image_precision(self):
        """The image tower's autocast (none in fp32)."""
        if self.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=DTYPES[self.precision])

    def _fp32(self):
        """Everything but the image tower: fp32, even inside a caller's autocast."""
        return torch.autocast(self.device.type, enabled=False)

    def _as_prompts(self, text, visual) -> tuple[torch.Tensor | None, torch.Tensor | None, int]:
        n = count_candidates(self.layout, self.text_shape, self.visual_shape, text, visual)

        def tensor(value):
            if value is None or np.size(value) == 0:
                return None
            if not torch.is_tensor(value):
                value = np.array(value, dtype=np.float32)  # a copy: arrays from Ray are read-only
            return torch.as_tensor(value, dtype=torch.float32, device=self.device)

        return (tensor(text) if self.layout.n_text else None,
                tensor(visual) if self.layout.n_visual else None, n)

    def _split(self, name: str) -> Split:
        splits = {"train": self.task.train, "val": self.task.val, "test": self.task.test}
        if name == "dev":
            if self.task.dev is None:
                raise ConfigError(f"{self.task.dataset}: its training pool has too few images "
                                  "per class for a dev draw disjoint from train and validation")
            return self.task.dev
        return splits[name] if name in splits else self._pieces[name]

    def _piece(self, split: str, images: tuple[int, int]) -> str:
        """The name of images ``start:stop`` of ``split`` as a split of their own (kept, so that
        the device cache knows it again)."""
        start, stop = (int(i) for i in images)
        size = len(self._split(split))
        if not 0 <= start < stop <= size:
            raise ConfigError(f"images must be a range (start, stop) in [0, {size}] with "
                              f"start < stop; got {images!r}")
        name = f"{split}[{start}:{stop}]"
        if name not in self._pieces:
            self._pieces[name] = self._split(split).subset(np.arange(start, stop))
            self._labels[name] = self._labels[split][start:stop]
        return name

    # --------------------------------------------------------------- features
    def _text_feats(self, text: torch.Tensor | None, n: int) -> torch.Tensor:
        if text is None:  # no context tokens: the plain "{class}." prompts, same for all
            text = torch.zeros((n, *self.text_shape), device=self.device)
        return self.prompted.text_features(text)

    def _image_feats(self, name: str, visual: torch.Tensor | None,
                     indices: np.ndarray | None, views: np.ndarray | None = None) -> torch.Tensor:
        """(1, m, D) without visual prompts (cached per split), else (n, m, D); fp32, normalised.
        With ``views``: of the images' augmented views, computed at every request."""
        with self._image_precision():
            if views is not None:
                return self._augmented_tower(name, visual, indices, views).float()
            return self._image_tower(name, visual, indices).float()

    def _augmented_tower(self, name: str, visual: torch.Tensor | None,
                         indices: np.ndarray | None, views: np.ndarray) -> torch.Tensor:
        prompted, batches = self.prompted, self.images.batches(self._split(name), indices, views)
        if visual is None:
            return torch.cat([prompted.image_features(b) for b in batches])[None]
        return torch.cat([prompted.prompted_image_features(prompted.patch_embeddings(b), visual)
                          for b in batches], dim=1)

    def _image_tower(self, name: str, visual: torch.Tensor | None,
                     indices: np.ndarray | None) -> torch.Tensor:
        split, prompted = self._split(name), self.prompted
        idx = None if indices is None else torch.as_tensor(indices, device=self.device)
        if visual is None:
            feats = self.images.features(prompted.image_features, split, prompted.embed_dim,
                                         self.precision)
            return (feats if idx is None else feats[idx])[None]
        patches = self.images.patches(prompted.patch_embeddings, split, self._patch_bytes(),
                                      self.precision)
        if patches is not None:
            return prompted.prompted_image_features(patches if idx is None else patches[idx], visual)
        return torch.cat([prompted.prompted_image_features(prompted.patch_embeddings(b), visual)
                          for b in self.images.batches(split, indices)], dim=1)

    def _patch_bytes(self) -> int:
        """Bytes of one image's patch embeddings in the image tower's precision."""
        tokens = int(self.model.model.visual.positional_embedding.shape[0])
        return tokens * self.prompted.visual_width * DTYPES[self.precision].itemsize

    def _score(self, name: str, text, visual, indices, features: bool,
               grad: bool = False, views: np.ndarray | None = None) -> tuple[Evaluation, torch.Tensor]:
        text_t, visual_t, n = self._as_prompts(text, visual)
        labels = self._labels[name]
        if indices is not None:
            labels = labels[torch.as_tensor(indices, device=self.device)]
        ctx = torch.enable_grad() if grad else torch.no_grad()
        with ctx, self._fp32():
            if grad:
                for t in (text_t, visual_t):
                    if t is not None:
                        t.requires_grad_(True)
            txt = self._text_feats(text_t, n)
            img = self._image_feats(name, visual_t, indices, views)
            losses, acc = self._losses(img, txt, labels)
        ev = Evaluation(
            losses=losses.detach().cpu().double().numpy(),
            accuracies=acc.cpu().double().numpy(),
            text_features=txt.detach().cpu().numpy() if features else None,
            image_features=img.detach().cpu().numpy() if features else None,
            labels=labels.cpu().numpy() if features else None,
            logit_scale=float(self.model.model.logit_scale.exp()) if features else None,
        )
        return ev, losses

    def _losses(self, img: torch.Tensor, txt: torch.Tensor,
                labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean cross-entropy and accuracy per candidate, the (n, m, C) logits taken in chunks.

        Chunks of candidates keep memory bounded: 30 candidates x 16,000 images x
        1,000 classes would be 1.9 GB of logits at once.
        """
        n, m, n_cls = txt.shape[0], img.shape[1], txt.shape[1]
        per_chunk = max(1, self.max_logits // (m * n_cls))
        losses, acc = [], []
        for start in range(0, n, per_chunk):
            sl = slice(start, min(start + per_chunk, n))
            k = sl.stop - sl.start
            logits = self.prompted.logits(img[sl] if img.shape[0] > 1 else img, txt[sl]).float()
            losses.append(F.cross_entropy(logits.reshape(k * m, n_cls), labels.repeat(k),
                                          reduction="none").view(k, m).mean(dim=1))
            acc.append((logits.argmax(dim=-1) == labels).float().mean(dim=1))
            del logits
            _trim_heap()
        return torch.cat(losses), torch.cat(acc)

    # --------------------------------------------------------------- channels
    def _charge(self, text, visual, subset, views) -> tuple[np.ndarray | None, np.ndarray | None]:
        """Check a training request and count it (BudgetExceededError: nothing counted); an
        augmented view counts as the one image it is a view of."""
        indices = check_subset(subset, self.train_size)
        views = check_views(views, self.train_size if indices is None else len(indices))
        n = count_candidates(self.layout, self.text_shape, self.visual_shape, text, visual)
        self.meter.charge(self.meter.cost(n, None if indices is None else len(indices)))
        return indices, views

    def evaluate(self, text=None, visual=None, *, features: bool = False,
                 subset=None, views=None) -> Evaluation:
        """Score candidates on the training set (or on the mini-batch ``subset``). Counted.

        Args:
            text: ``(n, *text_shape)`` context vectors (required when layout.n_text > 0).
            visual: ``(n, *visual_shape)`` visual prompts (required when layout.n_visual > 0).
            features: also return text and image features (for adapter methods).
            subset: indices of training images forming a mini-batch (default: all).
            views: score these augmented views of the images instead (``check_views``: a
                row per image, in ``subset``'s order).

        Raises:
            BudgetExceededError: the request would exceed the budget; nothing is computed.
        """
        indices, views = self._charge(text, visual, subset, views)
        ev, _ = self._score("train", text, visual, indices, features, views=views)
        return ev

    def evaluate_split(self, split: str, text=None, visual=None, *, features: bool = False,
                       images: tuple[int, int] | None = None) -> Evaluation:
        """Score candidates on validation or test, counted in ``eval_used`` and never in the
        budget; or on ``dev``, a method's own selection draw (``FewShot.dev``), counted in
        the budget like a training request.

        ``images``: only the split's images ``start:stop`` (the pool's pieces of a large
        evaluation); default: all of them.
        """
        if split not in (*_SPLITS, "dev"):
            raise ConfigError(f"split must be one of {(*_SPLITS, 'dev')}; got {split!r}")
        name = split if images is None else self._piece(split, images)
        n = count_candidates(self.layout, self.text_shape, self.visual_shape, text, visual)
        if split == "dev":  # the method's own queries: the budget pays
            self.meter.charge(self.meter.cost(n, len(self._split(name))))
        else:
            self.meter.charge_eval(n, len(self._split(name)))
        ev, _ = self._score(name, text, visual, None, features)
        return ev

    def zero_shot(self, split: str = "test", template: str | None = None) -> Evaluation:
        """The unprompted model with a hand-written template on a split (evaluation channel)."""
        if split not in (*_SPLITS, "train"):
            raise ConfigError(f"split must be train, val or test; got {split!r}")
        template = template or self.task.template
        labels = self._labels[split]
        self.meter.charge_eval(1, len(labels))
        with torch.no_grad(), self._fp32():
            txt = self.prompted.encode_texts([template.format(c) for c in self.task.classnames])[None]
            img = self._image_feats(split, None, None)
            logits = self.prompted.logits(img, txt)[0]
        loss = F.cross_entropy(logits, labels)
        acc = (logits.argmax(dim=-1) == labels).float().mean()
        return Evaluation(losses=np.array([float(loss)]), accuracies=np.array([float(acc)]))

    def gradient(self, text=None, visual=None, *, subset=None, views=None
                 ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """Glass box: per-candidate training losses and their true gradients. Counted like ``evaluate``.

        Returns:
            losses (n,), d loss_i / d text_i ``(n, *text_shape)`` or None, same for visual.
        """
        if not self.glass_box:
            raise ModelError("gradient() needs a glass-box oracle (glass_box=True, local model)")
        indices, views = self._charge(text, visual, subset, views)
        text_t, visual_t, _ = self._as_prompts(text, visual)
        text_t = None if text_t is None else text_t.clone()
        visual_t = None if visual_t is None else visual_t.clone()
        ev, losses = self._score("train", text_t, visual_t, indices, False, grad=True, views=views)
        # Candidates are independent, so the gradient of the sum gives each one's own gradient.
        inputs = [t for t in (text_t, visual_t) if t is not None]
        grads = iter(torch.autograd.grad(losses.sum(), inputs))
        g_text = next(grads).double().cpu().numpy() if text_t is not None else None
        g_vis = next(grads).double().cpu().numpy() if visual_t is not None else None
        return ev.losses, g_text, g_vis
