"""CBBT's adapter variants: a zeroth-order textual prompt and an output-feature adapter.

Guo et al., "Black-Box Tuning of Vision-Language Models with Effective Gradient
Approximation", Findings of EMNLP 2023 (guozix/cbbt; METHODS.md section 2).
RECONSTRUCTIONS: the release runs the prompt alone (``cbbt``, ``methods.cbbt``);
its adapter trainers are absent, so ``cbbt-adapter`` and ``cbbt-tip`` are ours,
with CBBT's prompt side and the adapter settings its configs give.

Collaboration, one step per ask/tell round:

1. ask(): the estimator's points around the prompt x (CBBT: x and x + eps u_i,
   u_i uniform on the unit sphere, q = 256, eps = max(1/d, 0.001)).
2. The black box returns, for every point, the class text features and the
   image features of one mini-batch (32 images).
3. tell(): the loss of every point is computed *locally*, through the current
   adapter, from those features: CE(logit_scale * normalize(A(f_img)) @
   f_text_i^T, labels). The estimator turns these losses into the prompt's
   gradient (so the prompt is tuned for the adapted model, not the raw one), and
   the update rule (Adam 0.002, L2 5e-4, cosine, clip 5) steps the prompt.
4. The adapter takes ``adapter_steps`` AdamW steps (autograd, locally) on the
   features of the centre point x (the row equal to x; estimators without one,
   like SPSA, give all rows, whose prompts surround x).

Both parts see the same adapter state in one step (losses first, then both
updates). The adapter never sees anything but features the black box returned.

Adapters (``adapter``):

* ``clip``: CLIP-Adapter (Gao et al. 2021, gaopengcuhk/CLIP-Adapter) on the
  image features, f' = ratio * MLP(f) + (1 - ratio) * f with ratio 0.2 (CBBT's
  ``adapter_ratio``) and MLP = Linear(D, D/4) -> ReLU -> Linear(D/4, D) -> ReLU,
  both without bias, default ``nn.Linear`` initialisation (seeded).
* ``tip``: Tip-Adapter-F (Zhang et al. 2022) as in CBBT's trainers/tip_adapter.py:
  logits = 60 f W^T + alpha exp(-beta (1 - f K^T)) V, with a cache of keys K
  (learnable, initialised from the image features) and one-hot values V built
  built once, as CBBT's tip_adapter.py builds it: one entry per training image,
  its key the mean of its augmented views' features (``TipCache``); alpha 3.0
  and beta 1.0 as CBBT's train.py defaults (init_alpha, init_beta). The views
  are those the prompt's steps see while the cache fills, where CBBT encodes
  10 augmented passes of their own before training: the same number of views
  of each image, and no query spent on them.

The published code lacks the adapter trainers (trainers/coopadapter.py and
cooptip.py are absent): the interleaving and the CLIP-Adapter optimiser are
reconstructions. Both adapters use CBBT's Tip optimiser, AdamW lr 1e-3, wd 0.01.
``cbbt-adapter`` applies and trains its adapter from the first step; ``cbbt-tip`` only
fills its cache during the first 1/15 of the planned steps (CBBT's
adapter_startepoch 10 of 150 epochs) and then uses and trains it. Before its
start an adapter is not applied: the local loss is the plain CLIP loss.

Cost: the local losses are one (n, m, D) x (n, D, C) product per step; with
q = 256 and C = 1000 the text features returned per step are n C D floats
(257 x 1000 x 512 x 4 B = 0.5 GB), which is the oracle's transfer, not this
module's. The tensors are tiny otherwise: on a busy CPU, torch's thread pool
costs more than the work (the caller should run trials with one torch thread).
"""

from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from methods.base import Evaluation, SearchSpace
from methods.errors import ConfigError
from methods.cbbt import CBBTConfig
from methods.zeroth_order import ZerothOrder

__all__ = ["CBBTAdapter", "CBBTAdapterConfig", "CBBTTipConfig", "ClipAdapter", "GrowingAdamW",
           "TipCache"]

ADAPTERS = ("clip", "tip")


class ClipAdapter(nn.Module):
    """CLIP-Adapter's residual MLP on image features: ratio * MLP(f) + (1 - ratio) * f.

    Args:
        dim: feature width D.
        reduction: hidden width is D // reduction (CLIP-Adapter: 4).
        ratio: residual ratio (CBBT adapter_ratio 0.2).
        generator: seeds the weights (U(-1/sqrt(fan_in), 1/sqrt(fan_in)), nn.Linear's default).
    """

    def __init__(self, dim: int, reduction: int, ratio: float, generator: torch.Generator) -> None:
        super().__init__()
        hidden = max(dim // reduction, 1)
        self.ratio = ratio
        self.fc1 = nn.Linear(dim, hidden, bias=False)
        self.fc2 = nn.Linear(hidden, dim, bias=False)
        with torch.no_grad():
            for layer in (self.fc1, self.fc2):
                bound = 1.0 / layer.in_features**0.5
                layer.weight.uniform_(-bound, bound, generator=generator)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """(..., D) image features -> (..., D) adapted, unnormalised features."""
        mlp = F.relu(self.fc2(F.relu(self.fc1(features))))
        return self.ratio * mlp + (1.0 - self.ratio) * features


class TipCache:
    """Tip-Adapter-F's cache: learnable keys (K, D) and one-hot values (K, C), one per training image.

    Built once, as CBBT's trainers/tip_adapter.py builds it (Tip-Adapter's
    ``build_cache_model``): an image's key is the normalised mean of its
    features over the augmented views seen while the cache fills, its value
    its one-hot label. CBBT encodes 10 augmented passes before training; here
    the views are those of the prompt's own steps during the first 1/15 of the
    plan (10 of CBBT's 150 epochs, so each image about 10 times, fewer where
    ``drop_last`` left it out), which costs no query of its own. Images are
    told apart by their training index (``Evaluation.indices``), else by their
    features (each distinct row its own image).
    """

    def __init__(self, num_classes: int, dim: int, max_size: int) -> None:
        self.keys = torch.zeros((0, dim), requires_grad=True)
        self.values = torch.zeros((0, num_classes))
        self.max_size = max_size
        self.built = False
        #: per image seen while filling: [sum of its features, views, label]
        self.seen: dict[Any, list] = {}

    def __len__(self) -> int:
        return self.keys.shape[0]

    def observe(self, features: np.ndarray, labels: np.ndarray,
                images: np.ndarray | None = None) -> None:
        """Add views (rows of ``features``) of the images ``images`` to their sums."""
        rows = np.asarray(features, dtype=np.float32)
        if images is None:
            images = [hashlib.blake2b(r.tobytes(), digest_size=16).digest() for r in rows]
        for row, label, image in zip(rows, labels, images):
            image = image if isinstance(image, bytes) else int(image)
            if image not in self.seen:
                if len(self.seen) >= self.max_size:
                    continue
                self.seen[image] = [np.zeros_like(row, dtype=np.float64), 0, int(label)]
            entry = self.seen[image]
            entry[0] += row
            entry[1] += 1

    def build(self) -> None:
        """The keys and values from the views seen (in the order the images were first seen)."""
        if self.seen:
            means = np.stack([total / count for total, count, _ in self.seen.values()])
            keys = F.normalize(torch.from_numpy(means).float(), dim=-1)
            self.keys = keys.requires_grad_(True)
            labels = torch.tensor([label for *_, label in self.seen.values()])
            self.values = F.one_hot(labels, self.values.shape[1]).float()
        self.built, self.seen = True, {}

    def logits(self, features: torch.Tensor, alpha: float, beta: float) -> torch.Tensor:
        """(..., m, D) features -> (..., m, C) cache logits alpha exp(-beta (1 - f K^T)) V."""
        affinity = features @ self.keys.T
        return alpha * torch.exp(-beta * (1.0 - affinity)) @ self.values


class GrowingAdamW:
    """torch.optim.AdamW on named tensors whose rows may grow (Tip's cache); plain-tensor state."""

    def __init__(self, lr: float, weight_decay: float, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8) -> None:
        self.lr, self.weight_decay, self.betas, self.eps = lr, weight_decay, betas, eps
        self.state: dict[str, dict[str, Any]] = {}

    @torch.no_grad()
    def step(self, params: dict[str, torch.Tensor]) -> None:
        b1, b2 = self.betas
        for name, p in params.items():
            if p.grad is None:
                continue
            s = self.state.setdefault(
                name, {"step": 0, "m": torch.zeros_like(p), "v": torch.zeros_like(p)})
            if s["m"].shape != p.shape:  # the cache grew: new rows start with zero moments
                pad = p.shape[0] - s["m"].shape[0]
                s["m"] = torch.cat([s["m"], p.new_zeros((pad, *p.shape[1:]))])
                s["v"] = torch.cat([s["v"], p.new_zeros((pad, *p.shape[1:]))])
            s["step"] += 1
            p.mul_(1 - self.lr * self.weight_decay)
            s["m"].mul_(b1).add_(p.grad, alpha=1 - b1)
            s["v"].mul_(b2).addcmul_(p.grad, p.grad, value=1 - b2)
            denom = (s["v"].sqrt() / (1 - b2 ** s["step"]) ** 0.5).add_(self.eps)
            p.addcdiv_(s["m"], denom, value=-self.lr / (1 - b1 ** s["step"]))
            p.grad = None


@dataclass(frozen=True, kw_only=True)
class CBBTAdapterConfig(CBBTConfig):
    """CBBT's prompt side (``methods.cbbt``) with a reconstructed adapter on the features."""

    #: "clip" (CLIP-Adapter residual) or "tip" (Tip-Adapter-F cache).
    adapter: str = "clip"
    #: residual ratio of the CLIP-Adapter (CBBT adapter_ratio 0.2).
    adapter_ratio: float = 0.2
    #: hidden width D // adapter_reduction of the CLIP-Adapter MLP (CLIP-Adapter: 4).
    adapter_reduction: int = 4
    #: adapter AdamW learning rate (CBBT's Tip config: 1e-3; CLIP-Adapter's: not found).
    adapter_lr: float = 1e-3
    #: adapter AdamW weight decay (CBBT's Tip config: 0.01).
    adapter_weight_decay: float = 0.01
    #: adapter steps per prompt step, on the centre point's features.
    adapter_steps: int = 1
    #: fraction of the planned steps before the adapter is used and trained (0: from the start).
    adapter_start: float = 0.0
    #: estimate the prompt's gradient from the local losses through the adapter (CBBT);
    #: False uses the black box's own losses.
    local_loss: bool = True
    #: Tip-Adapter's alpha, weight of the cache logits (CBBT train.py init_alpha: 3.0; the
    #: Tip-Adapter paper: 1).
    tip_alpha: float = 3.0
    #: Tip-Adapter's beta, sharpness of the affinities (CBBT train.py init_beta: 1.0; the
    #: Tip-Adapter paper: 5.5).
    tip_beta: float = 1.0
    #: scale of Tip's CLIP logits (CBBT trainers/tip_adapter.py: 60); None: the model's logit scale.
    tip_clip_scale: float | None = 60.0
    #: most cache entries kept (training images; further ones are ignored).
    tip_max_cache: int = 16384

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.adapter not in ADAPTERS:
            raise ConfigError(f"adapter must be one of {ADAPTERS}; got {self.adapter!r}")
        if not 0 <= self.adapter_ratio <= 1:
            raise ConfigError(f"adapter_ratio must be in [0, 1]; got {self.adapter_ratio}")
        if self.adapter_reduction < 1 or self.adapter_steps < 0 or self.tip_max_cache < 1:
            raise ConfigError(
                "adapter_reduction and tip_max_cache must be >= 1 and adapter_steps >= 0; got "
                f"{self.adapter_reduction}, {self.tip_max_cache}, {self.adapter_steps}"
            )
        if not 0 <= self.adapter_start <= 1:
            raise ConfigError(f"adapter_start is a fraction in [0, 1]; got {self.adapter_start}")
        for name in ("adapter_lr", "tip_beta"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be > 0; got {getattr(self, name)}")
        if self.adapter_weight_decay < 0 or self.tip_alpha < 0:
            raise ConfigError("adapter_weight_decay and tip_alpha must be >= 0")
        if self.tip_clip_scale is not None and not self.tip_clip_scale > 0:
            raise ConfigError(f"tip_clip_scale must be > 0 or None; got {self.tip_clip_scale}")


@dataclass(frozen=True, kw_only=True)
class CBBTTipConfig(CBBTAdapterConfig):
    """CBBT with the Tip-Adapter-F cache (CBBT's Tip variant)."""

    #: the Tip-Adapter-F cache.
    adapter: str = "tip"
    #: CBBT adapter_startepoch 10 of 150 epochs: the cache fills during the first 1/15.
    adapter_start: float = 1 / 15


class CBBTAdapter(ZerothOrder):
    """CBBT: zeroth-order textual prompt plus a locally trained output-feature adapter.

    ``needs_features``: every tell() needs the text features of every point,
    the image features of the mini-batch, its labels and the logit scale.
    ``predict()`` applies the adapter to the features of the recommended prompt.

    Example (a quadratic hidden in the text features of 3 classes):
        >>> import numpy as np
        >>> from methods.base import Evaluation, SearchSpace
        >>> rng = np.random.default_rng(0)
        >>> img = rng.normal(size=(30, 8)); img /= np.linalg.norm(img, axis=1, keepdims=True)
        >>> labels = np.arange(30) % 3
        >>> def evaluate(z):
        ...     txt = np.tanh(z[:, None, :8] + z[:, None, 8:] * np.arange(3)[None, :, None])
        ...     txt /= np.linalg.norm(txt, axis=-1, keepdims=True) + 1e-9
        ...     return Evaluation(losses=(z**2).sum(1), text_features=txt.astype(np.float32),
        ...                       image_features=img[None].astype(np.float32), labels=labels,
        ...                       logit_scale=10.0)
        >>> method = CBBTAdapter(CBBTAdapterConfig(q=8, mu=0.01, lr=0.05), SearchSpace(16), seed=0)
        >>> method.plan(5)
        >>> for _ in range(5):
        ...     z = method.ask()
        ...     method.tell(z, evaluate(z))
        >>> method.predict(evaluate(method.recommend()[None])).shape
        (30, 3)
    """

    name: ClassVar[str] = "cbbt-adapter"
    needs_features: ClassVar[bool] = True

    def __init__(self, config: CBBTAdapterConfig, space: SearchSpace, seed: int) -> None:
        if not isinstance(config, CBBTAdapterConfig):
            raise ConfigError(
                f"{self.name}: config must be a CBBTAdapterConfig; got {type(config).__name__}")
        super().__init__(config, space, seed)
        self.adapter: ClipAdapter | None = None  # built at the first tell (D is unknown before)
        self.cache: TipCache | None = None
        self.optimizer = GrowingAdamW(config.adapter_lr, config.adapter_weight_decay)
        #: local loss of the centre point at the last tell() (diagnostics).
        self.last_local_loss: float | None = None

    # ---------------------------------------------------------------- adapter
    @property
    def adapter_active(self) -> bool:
        """Whether the adapter is applied (and trained) at the current step."""
        if self.planned is None:
            return True
        return self.steps >= int(self.config.adapter_start * self.planned)

    def _build(self, num_classes: int, dim: int) -> None:
        c = self.config
        if c.adapter == "clip" and self.adapter is None:
            seed = int(np.random.SeedSequence([self.seed, 1]).generate_state(1)[0])
            self.adapter = ClipAdapter(dim, c.adapter_reduction, c.adapter_ratio,
                                       torch.Generator().manual_seed(seed))
        if c.adapter == "tip" and self.cache is None:
            self.cache = TipCache(num_classes, dim, c.tip_max_cache)

    def _params(self) -> dict[str, torch.Tensor]:
        if self.adapter is not None:
            return dict(self.adapter.named_parameters())
        if self.cache is not None and len(self.cache):
            return {"keys": self.cache.keys}
        return {}

    def _logits(self, image: torch.Tensor, text: torch.Tensor, scale: float,
                active: bool) -> torch.Tensor:
        """(k, m, D) image and (n, C, D) text features -> (n, m, C) logits (k in {1, n})."""
        c = self.config
        if c.adapter == "clip":
            if active and self.adapter is not None:
                image = F.normalize(self.adapter(image), dim=-1)
            return scale * image @ text.transpose(1, 2)
        clip_scale = scale if c.tip_clip_scale is None else c.tip_clip_scale
        logits = clip_scale * image @ text.transpose(1, 2)
        if active and self.cache is not None and len(self.cache):
            logits = logits + self.cache.logits(image, c.tip_alpha, c.tip_beta)
        return logits

    def _features(self, evaluation: Evaluation, n: int
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
        """Checked tensors: text (n, C, D), image (1 | n, m, D), labels (m,); the logit scale."""
        ev = evaluation
        missing = [name for name in ("text_features", "image_features", "labels", "logit_scale")
                   if getattr(ev, name) is None]
        if missing:
            raise ConfigError(
                f"{self.name}: the evaluation lacks {', '.join(missing)}; CBBT needs the "
                "features of every point (needs_features is set: evaluate with features=True)"
            )
        text = torch.as_tensor(np.asarray(ev.text_features, dtype=np.float32))
        image = torch.as_tensor(np.asarray(ev.image_features, dtype=np.float32))
        labels = torch.as_tensor(np.asarray(ev.labels, dtype=np.int64))
        if text.ndim != 3 or text.shape[0] != n or image.ndim != 3 or image.shape[0] not in (1, n) \
                or image.shape[1] != labels.shape[0] or image.shape[2] != text.shape[2]:
            raise ConfigError(
                f"{self.name}: features of {n} points must be text (n, C, D), image (1 or n, m, D) "
                f"and labels (m,); got {tuple(text.shape)}, {tuple(image.shape)}, "
                f"{tuple(labels.shape)}"
            )
        return text, image, labels, float(ev.logit_scale)

    def _gradient(self, z: np.ndarray, evaluation: Evaluation, losses: np.ndarray) -> np.ndarray:
        n = z.shape[0]
        text, image, labels, scale = self._features(evaluation, n)
        self._build(text.shape[1], text.shape[2])
        active = self.adapter_active
        # The centre is found among the points as asked (the loop may hand back a cast copy).
        asked = z if self._pending is None else self._pending
        centre = np.flatnonzero((asked == self.x).all(axis=1))
        rows = centre if len(centre) else np.arange(n)
        if self.cache is not None and not self.cache.built:
            # Tip: the centre's image features fill the cache until the adapter starts, which
            # builds it (from this step's alone when it starts at once).
            if not active or not self.cache.seen:
                self.cache.observe(image[rows[0] if image.shape[0] == n else 0].numpy(),
                                   labels.numpy(), evaluation.indices)
            if active:
                self.cache.build()
        with torch.no_grad():
            logits = self._logits(image, text, scale, active).double()
            local = F.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), labels.repeat(n), reduction="none"
            ).view(n, -1).mean(dim=1).numpy()
        self.last_local_loss = float(local[rows].mean())
        g = np.asarray(self.estimator.combine(
            self.x.copy(), z, local if self.config.local_loss else losses), dtype=np.float64)
        if active:
            self._train(image[rows] if image.shape[0] == n else image, text[rows], labels, scale)
        return g

    def _train(self, image: torch.Tensor, text: torch.Tensor, labels: torch.Tensor,
               scale: float) -> None:
        """``adapter_steps`` AdamW steps on the CE of the adapted logits (autograd, locally)."""
        params = self._params()
        if not params:
            return
        for _ in range(self.config.adapter_steps):
            logits = self._logits(image, text, scale, True)
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                   labels.repeat(logits.shape[0]))
            grads = torch.autograd.grad(loss, list(params.values()))
            for p, g in zip(params.values(), grads):
                p.grad = g
            self.optimizer.step(params)

    def predict(self, evaluation: Evaluation) -> np.ndarray:
        """(m, C) logits of the first point's features through the adapter."""
        n = 0 if evaluation.text_features is None else len(evaluation.text_features)
        text, image, _, scale = self._features(evaluation, n)
        with torch.no_grad():
            return self._logits(image[:1], text[:1], scale, self.adapter_active)[0].double().numpy()

    # ---------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["adapter"] = None if self.adapter is None else {
            k: v.detach().numpy().copy() for k, v in self.adapter.state_dict().items()}
        state["cache"] = None if self.cache is None else {
            "keys": self.cache.keys.detach().numpy().copy(),
            "values": self.cache.values.numpy().copy(),
            "built": self.cache.built,
            "seen": [(image, total.copy(), count, label)
                     for image, (total, count, label) in self.cache.seen.items()],
        }
        state["optimizer"] = {
            name: {"step": s["step"], "m": s["m"].numpy().copy(), "v": s["v"].numpy().copy()}
            for name, s in self.optimizer.state.items()
        }
        state["last_local_loss"] = self.last_local_loss
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.adapter, self.cache = None, None
        if state["adapter"] is not None:
            weights = {k: torch.from_numpy(np.array(v)) for k, v in state["adapter"].items()}
            dim = weights["fc1.weight"].shape[1]
            c = self.config
            self.adapter = ClipAdapter(dim, c.adapter_reduction, c.adapter_ratio,
                                       torch.Generator().manual_seed(0))
            self.adapter.load_state_dict(weights)
        if state["cache"] is not None:
            values = np.array(state["cache"]["values"])
            self.cache = TipCache(values.shape[1], np.asarray(state["cache"]["keys"]).shape[1],
                                  self.config.tip_max_cache)
            keys = torch.from_numpy(np.array(state["cache"]["keys"]))
            self.cache.keys = keys.requires_grad_(True)
            self.cache.values = torch.from_numpy(values)
            self.cache.built = state["cache"]["built"]
            self.cache.seen = {image: [np.array(total), count, label]
                               for image, total, count, label in state["cache"]["seen"]}
        self.optimizer.state = {
            name: {"step": s["step"], "m": torch.from_numpy(np.array(s["m"])),
                   "v": torch.from_numpy(np.array(s["v"]))}
            for name, s in copy.deepcopy(state["optimizer"]).items()
        }
        self.last_local_loss = state["last_local_loss"]
