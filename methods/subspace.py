"""The map from a method's search vector z to prompt arrays: p = p0 + f(z).

A method searches R^dim from z = 0; this module turns its points into the
arrays the oracle takes: text contexts ``(n, *text_shape)`` and visual prompts
``(n, *visual_shape)``. Per tower and prompt layer, f is either

* the identity (intrinsic dimension None): z's slice *is* the flattened
  prompt offset (CBBT, CoOp-like methods), or
* a fixed random projection A in R^(tokens*width x d), p = p0 + A z
  (BBT, BPT-VLM; ../shared/reference/METHODS.md sections 1 and 3), or
* ZIP's low-rank map (text only, ``text_subspace = "lowrank"``,
  ``methods.lowrank``): token i moves by F_i (U diag(s) V^T + shared)_i,
  not linear in z.

Every matrix is drawn from its own generator keyed by (seed, layer, tower), so
the same ``(config, shapes, stats, seed)`` rebuild the identical float32
matrices in any process and in any order of construction: only z ever needs to
cross a process boundary. The matrices are bit-identical for one numpy version
(numpy does not promise Generator streams across versions: pin numpy on a
cluster); the prompts are a float32 matrix product, identical to float
rounding across machines (the BLAS kernel may differ).

Projection rules (d = intrinsic dimension of that tower, sigma =
``projection_sigma``, alpha = ``projection_alpha``):

* text, layer 0: mean 0, std token_embedding_std / (sqrt(d) * sigma) (BBT), or a
  fixed std ``projection_std`` (CraFT, SharpZO: ``nn.init.normal_(std)``);
* visual, layer 0: mean patch_weight_mean * fan_in / d,
  std patch_weight_std * sqrt(fan_in / d) * sigma (BPT-VLM), so that A z with
  z ~ N(0, I) lands roughly at the scale of the patch embeddings;
* either tower, layer i > 0: mean 0, std alpha * hidden_std[i] / (sqrt(d) * sigma)
  (BBTv2, BPT-VLM deep).

Differences from the published code (ECNU-ICALK/BPT-VLM: model/Shallow_Prompt_CLIP.py,
model/Deep_Prompt_CLIP.py), checked against its source:

* The visual fan-in is read from the model (``ModelStats.patch_fan_in``); the
  published code hard-codes 3072 = 3*32*32, right for ViT-B/32 only (on
  ViT-B/16, fan-in 768, it makes the mean 4x and the std 2x too large).
* Deep, layer 0, visual: the published code takes the *mean* from conv1 but
  the *std* from the text token embedding (it reuses the variable
  ``embedding``); the shallow code uses conv1 for both, so that is the intent
  followed here.
* Deep, layers i > 0: the published code scales the prompt of layer i with the
  statistics of ``hidden_states[i]``, which its encoders record *after* block
  i (that is, the input of block i + 1), taken from the very first forward.
  Here ``hidden_std[i]`` is defined as the hidden state *entering* block i,
  the one the layer-i prompt replaces (BBTv2's intent); which forward the
  statistics come from is the oracle's business.
* The published visual rule *multiplies* by sigma where the text and deep
  rules divide. The code is followed as written (at the published sigma = 1
  the two agree); a sweep over ``projection_sigma`` therefore moves the visual
  scale the other way from the text scale.
* Matrices are float32 numpy arrays (the published ones are fp16
  ``nn.Linear`` weights on the GPU, drawn from the global torch RNG).

Memory: one float32 matrix costs 4 * tokens * width * d bytes. BPT-VLM's
shallow default on ViT-B/32 (8 x 512 text and 5 x 768 visual tokens, d = 500
each) is 4096 x 500 + 3840 x 500 = 3.97 M entries = 15.9 MB; deep, one pair
per layer for 12 layers, 190 MB. Matrices are generated lazily, on the first
product that needs them (a z block that is zero in every row needs none, so
the untouched layers of a block-coordinate deep search cost nothing), and
kept; ``cache=False`` keeps none and regenerates each one at every call
instead (about 50-100 ms per 2 M entries on one core).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from methods.base import PromptConfig, SearchSpace
from methods.errors import ConfigError
from methods.lowrank import draw_factors, lowrank_offset, lowrank_size

__all__ = ["ModelStats", "Parametrisation", "Segment", "TOWERS"]

#: tower name -> the id that keys its matrices' generators (part of the reproducibility contract).
TOWERS: dict[str, int] = {"text": 0, "visual": 1}

# Goes into every matrix's spawn key so that these streams never coincide with a
# generator a method builds from the same seed (np.random.default_rng(seed), or
# SeedSequence(seed).spawn(k), whose keys have one element).
_STREAM_TAG = 0x53554253  # "SUBS"
_INIT_TAG = 0x494E4954  # "INIT": the stream of a drawn p0 (text_init_std)
_LOWRANK_TAG = 0x4C4F5752  # "LOWR": the streams of ZIP's V0 and F_i


@dataclass(frozen=True)
class ModelStats:
    """Statistics of the model that scale the projections; read off the model by the oracle.

    Attributes:
        token_embedding_std: std of all token-embedding entries (BBT's sigma_hat).
        patch_weight_mean: mean of the ViT patch-embedding conv weights (conv1).
        patch_weight_std: their std.
        patch_fan_in: 3 * patch_h * patch_w of that conv (3072 on ViT-B/32).
        text_hidden_std: per text layer i (0..L-1), the std of the hidden state
            entering block i, after 5 rounds of +-3 sigma clipping (BBTv2).
            Entry 0 is never used: layer 0 follows the token-embedding rule.
        visual_hidden_std: the same for the vision tower (empty for a ResNet).
    """

    token_embedding_std: float
    patch_weight_mean: float
    patch_weight_std: float
    patch_fan_in: int
    text_hidden_std: tuple[float, ...] = ()
    visual_hidden_std: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        # Lists (from JSON, from the oracle) become tuples: stats stay hashable and comparable.
        for name in ("text_hidden_std", "visual_hidden_std"):
            object.__setattr__(self, name, tuple(float(v) for v in getattr(self, name)))
        for name in ("token_embedding_std", "patch_weight_mean", "patch_weight_std"):
            object.__setattr__(self, name, float(getattr(self, name)))
        if isinstance(self.patch_fan_in, bool) or int(self.patch_fan_in) != self.patch_fan_in:
            raise ConfigError(f"patch_fan_in must be an integer; got {self.patch_fan_in!r}")
        object.__setattr__(self, "patch_fan_in", int(self.patch_fan_in))


@dataclass(frozen=True)
class Segment:
    """One tower and layer of the prompt, and the slice of z that drives it.

    Attributes:
        tower: "text" or "visual".
        layer: prompt layer (0 for a shallow prompt).
        start: first coordinate of z.
        stop: one past the last coordinate of z.
        tokens: prompt tokens of this tower.
        width: embedding width of this tower.
        intrinsic_dim: d of the projection (ZIP's ID for "lowrank"); None for the identity.
        mean: mean of the projection entries (None for the identity and "lowrank").
        std: std of the projection entries (None for the identity and "lowrank").
        kind: "dense" (A z, or the identity) or "lowrank" (ZIP's map).
        rank: the rank of a "lowrank" segment.
    """

    tower: str
    layer: int
    start: int
    stop: int
    tokens: int
    width: int
    intrinsic_dim: int | None
    mean: float | None
    std: float | None
    kind: str = "dense"
    rank: int | None = None

    @property
    def size(self) -> int:
        """Entries of this layer's prompt (rows of its matrix)."""
        return self.tokens * self.width

    @property
    def row(self) -> int:
        """The length m = ID // tokens of a "lowrank" segment's rows."""
        return int(self.intrinsic_dim) // self.tokens

    @property
    def nbytes(self) -> int:
        """Bytes of this segment's float32 matrices (0 for the identity)."""
        if self.kind == "lowrank":
            return 4 * self.row * (self.tokens * self.width + int(self.rank))
        return 0 if self.intrinsic_dim is None else 4 * self.size * self.intrinsic_dim


class Parametrisation:
    """z -> (text prompts, visual prompts), rebuilt exactly from (config, shapes, stats, seed).

    The search vector is laid out layer by layer, ``[layer 0: z_text, z_visual |
    layer 1: z_text, z_visual | ...]``; a tower shallower than the other has no
    block in the deeper layers, and a tower without a prompt has none at all.
    For a deep prompt ``space.blocks`` holds one block per layer (what the
    block-coordinate deep searches of BBTv2 and BPT-VLM iterate over); for a
    shallow prompt it is None (one block).

    Attributes:
        config: the prompt configuration.
        text_shape: one candidate's text prompt, (n_text, W) or (L, n_text, W); None without one.
        visual_shape: the same for the visual prompt.
        stats: the model statistics behind the projection scales.
        seed: the seed of every matrix.
        space: the search space (dim, and per-layer blocks when deep).
        segments: one Segment per tower and layer, in the order of z.
    """

    def __init__(
        self,
        config: PromptConfig,
        text_shape: tuple[int, ...] | None,
        visual_shape: tuple[int, ...] | None,
        stats: ModelStats,
        seed: int,
        text_init: np.ndarray | None = None,
        visual_init: np.ndarray | None = None,
        *,
        cache: bool = True,
    ) -> None:
        """Check the layout against the config and lay out z; no matrix is drawn yet.

        Args:
            config: where the prompt goes and the intrinsic dimensions and projection scales.
            text_shape: one candidate's text prompt shape, None when ``config.n_text`` is 0.
            visual_shape: one candidate's visual prompt shape, None when ``config.n_visual`` is 0.
            stats: the model statistics the projection rules need.
            seed: non-negative integer; with the rest, it fixes every matrix.
            text_init: p0 of the text tower, of ``text_shape`` (zeros when None).
            visual_init: p0 of the visual tower, of ``visual_shape`` (zeros when None).
            cache: keep each matrix after its first use (False: regenerate at every call).

        Raises:
            ConfigError: shapes that do not match the config, an intrinsic dimension
                on a tower without a prompt, an init of the wrong shape, or
                statistics a projection rule needs that are missing or not positive.
        """
        if (isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer))
                or seed < 0):
            raise ConfigError(f"the subspace seed must be an integer >= 0; got {seed!r}")
        self.config = config
        self.stats = stats
        self.seed = int(seed)
        self.cache = bool(cache)
        self.text_shape = self._check_shape("text", config.n_text, text_shape,
                                            config.intrinsic_dim_text)
        self.visual_shape = self._check_shape("visual", config.n_visual, visual_shape,
                                              config.intrinsic_dim_visual)
        self._p0 = {
            "text": self._check_init("text", text_init, self.text_shape),
            "visual": self._check_init("visual", visual_init, self.visual_shape),
        }
        if config.text_init_std and self._p0["text"] is not None:
            seq = np.random.SeedSequence(self.seed,
                                         spawn_key=(_STREAM_TAG, _INIT_TAG, TOWERS["text"]))
            p0 = self._p0["text"]
            p0 += np.random.default_rng(seq).normal(0.0, config.text_init_std, p0.shape).astype(
                np.float32)
        self.segments, self.space = self._layout()
        self._matrices: dict[tuple[str, int], np.ndarray] = {}
        self._lowrank: dict[tuple[str, int], tuple[np.ndarray, np.ndarray]] = {}

    # ------------------------------------------------------------------ checks
    def _check_shape(self, tower: str, n_tokens: int, shape: tuple[int, ...] | None,
                     intrinsic_dim: int | None) -> tuple[int, ...] | None:
        """The shape as a tuple of ints, after checking it against the config."""
        if n_tokens == 0:
            if shape is not None:
                raise ConfigError(f"the config has no {tower} prompt (n_{tower} = 0) "
                                  f"but a {tower} shape {shape} was given")
            if intrinsic_dim is not None:
                raise ConfigError(f"intrinsic_dim_{tower} = {intrinsic_dim} but the config has no "
                                  f"{tower} prompt (n_{tower} = 0)")
            return None
        if shape is None:
            raise ConfigError(f"n_{tower} = {n_tokens} but no {tower} shape was given "
                              f"(does the model have a {tower} prompt slot?)")
        try:
            shape = tuple(int(s) for s in shape)
        except (TypeError, ValueError):
            raise ConfigError(f"{tower} shape must be a tuple of integers; got {shape!r}") from None
        rank = 3 if self.config.deep else 2
        if len(shape) != rank or any(s < 1 for s in shape) or shape[-2] != n_tokens:
            layout = f"(layers, {n_tokens}, width)" if self.config.deep else f"({n_tokens}, width)"
            raise ConfigError(f"a {'deep' if self.config.deep else 'shallow'} {tower} prompt of "
                              f"{n_tokens} tokens needs a shape {layout}; got {shape}")
        return shape

    @staticmethod
    def _check_init(tower: str, init: np.ndarray | None,
                    shape: tuple[int, ...] | None) -> np.ndarray | None:
        """p0 as float32 (zeros when None), or None for a tower without a prompt."""
        if shape is None:
            if init is not None:
                raise ConfigError(f"a {tower} init was given but there is no {tower} prompt")
            return None
        if init is None:
            return np.zeros(shape, dtype=np.float32)
        # A private copy: the caller may reuse its buffer, and p0 is part of the rebuilt state.
        init = np.array(init, dtype=np.float32)
        if init.shape != shape:
            raise ConfigError(f"{tower}_init must have the {tower} shape {shape}; got {init.shape}")
        if not np.isfinite(init).all():
            raise ConfigError(f"{tower}_init has non-finite entries")
        return init

    # ------------------------------------------------------------------ layout
    def _layout(self) -> tuple[tuple[Segment, ...], SearchSpace]:
        cfg = self.config
        towers = [(name, shape, d) for name, shape, d in (
            ("text", self.text_shape, cfg.intrinsic_dim_text),
            ("visual", self.visual_shape, cfg.intrinsic_dim_visual),
        ) if shape is not None]
        depth = {name: (shape[0] if cfg.deep else 1) for name, shape, _ in towers}
        segments: list[Segment] = []
        blocks: list[tuple[int, int]] = []
        offset = 0
        for layer in range(max(depth.values())):
            block_start = offset
            for name, shape, d in towers:
                if layer >= depth[name]:
                    continue
                tokens, width = shape[-2], shape[-1]
                if name == "text" and cfg.text_subspace == "lowrank":
                    size = lowrank_size(tokens, d, cfg.subspace_rank)
                    segments.append(Segment(name, layer, offset, offset + size, tokens, width, d,
                                            None, None, "lowrank", cfg.subspace_rank))
                    offset += size
                    continue
                mean, std = (None, None) if d is None else self._rule(name, layer, d)
                size = tokens * width if d is None else d
                segments.append(Segment(name, layer, offset, offset + size, tokens, width, d,
                                        mean, std))
                offset += size
            blocks.append((block_start, offset))
        space = SearchSpace(dim=offset, blocks=tuple(blocks) if cfg.deep else None)
        return tuple(segments), space

    def _rule(self, tower: str, layer: int, d: int) -> tuple[float, float]:
        """(mean, std) of the entries of the projection of one tower and layer."""
        cfg, st = self.config, self.stats
        sigma, alpha = cfg.projection_scale_sigma, cfg.projection_alpha
        if layer > 0:
            hidden = st.text_hidden_std if tower == "text" else st.visual_hidden_std
            if len(hidden) <= layer:
                raise ConfigError(f"a deep {tower} projection at layer {layer} needs "
                                  f"stats.{tower}_hidden_std for every layer; "
                                  f"got {len(hidden)} values")
            _positive(f"stats.{tower}_hidden_std[{layer}]", hidden[layer])
            return 0.0, alpha * hidden[layer] / (math.sqrt(d) * sigma)
        if tower == "text":
            if cfg.projection_std is not None:  # CraFT's and SharpZO's fixed std
                return 0.0, cfg.projection_std
            _positive("stats.token_embedding_std", st.token_embedding_std)
            return 0.0, st.token_embedding_std / (math.sqrt(d) * sigma)
        _positive("stats.patch_weight_std", st.patch_weight_std)
        _positive("stats.patch_fan_in", st.patch_fan_in)
        if not math.isfinite(st.patch_weight_mean):
            raise ConfigError(f"stats.patch_weight_mean must be finite; got {st.patch_weight_mean}")
        # BPT-VLM: sigma multiplies here (see the module docstring).
        return (st.patch_weight_mean * st.patch_fan_in / d,
                st.patch_weight_std * math.sqrt(st.patch_fan_in / d) * sigma)

    # ------------------------------------------------------------------ matrices
    @property
    def nbytes(self) -> int:
        """Bytes of all projection matrices once generated (float32)."""
        return sum(seg.nbytes for seg in self.segments)

    def segment(self, tower: str, layer: int = 0) -> Segment:
        """The segment of one tower and layer.

        Raises:
            ConfigError: no such tower or layer in this layout.
        """
        for seg in self.segments:
            if seg.tower == tower and seg.layer == layer:
                return seg
        raise ConfigError(f"no {tower!r} prompt at layer {layer} in this layout")

    def matrix(self, tower: str, layer: int = 0) -> np.ndarray | None:
        """The projection A (tokens*width, d) of one tower and layer; None for the identity.

        The returned array is shared with the cache: do not modify it.

        Raises:
            ConfigError: the segment is "lowrank" (ZIP's map is not one matrix).
        """
        seg = self.segment(tower, layer)
        if seg.kind == "lowrank":
            raise ConfigError(f"the {tower} subspace is 'lowrank': ZIP's map has no matrix A")
        return self._matrix(seg)

    def lowrank_factors(self, seg: Segment) -> tuple[np.ndarray, np.ndarray]:
        """ZIP's V0 and token maps F of a "lowrank" segment (``methods.lowrank``), drawn from
        (seed, layer, tower); shared with the cache."""
        key = (seg.tower, seg.layer)
        found = self._lowrank.get(key)
        if found is None:
            seq = np.random.SeedSequence(self.seed, spawn_key=(_STREAM_TAG, _LOWRANK_TAG, seg.layer,
                                                               TOWERS[seg.tower]))
            found = draw_factors(np.random.default_rng(seq), seg.tokens, seg.width, seg.row,
                                 int(seg.rank))
            if self.cache:
                self._lowrank[key] = found
        return found

    def _matrix(self, seg: Segment) -> np.ndarray | None:
        if seg.intrinsic_dim is None:
            return None
        key = (seg.tower, seg.layer)
        a = self._matrices.get(key)
        if a is None:
            # Keyed by (seed, layer, tower) only, so the draw does not depend on the
            # order matrices are built in, nor on the other tower's layout.
            stream = (_STREAM_TAG, seg.layer, TOWERS[seg.tower])
            seq = np.random.SeedSequence(self.seed, spawn_key=stream)
            # Built in place in float32: a float64 temporary would double the peak memory.
            a = np.random.default_rng(seq).standard_normal((seg.size, seg.intrinsic_dim),
                                                           dtype=np.float32)
            a *= np.float32(seg.std)
            if seg.mean:
                a += np.float32(seg.mean)
            if self.cache:
                self._matrices[key] = a
        return a

    # ------------------------------------------------------------------ the map
    def initial(self) -> tuple[np.ndarray | None, np.ndarray | None]:
        """Copies of p0 (text, visual), the prompts at z = 0."""
        text, visual = self._p0["text"], self._p0["visual"]
        return (None if text is None else text.copy(), None if visual is None else visual.copy())

    def prompts(self, z: np.ndarray) -> tuple[np.ndarray | None, np.ndarray | None]:
        """Map a batch of search points to prompts, one matrix product per tower and layer.

        Args:
            z: (n, dim) search points.

        Returns:
            (text, visual): float32 arrays (n, *text_shape) and (n, *visual_shape);
            None for a tower without a prompt.

        Raises:
            ConfigError: z is not (n, dim) or has non-finite entries.
        """
        z = np.asarray(z)
        if z.ndim != 2 or z.shape[1] != self.space.dim:
            raise ConfigError(f"z must have shape (n, {self.space.dim}); got {z.shape}")
        if not np.issubdtype(z.dtype, np.number) or np.issubdtype(z.dtype, np.complexfloating):
            raise ConfigError(f"z must be real; got dtype {z.dtype}")
        # The products run in float32, the prompts' precision: it halves the matrices' memory.
        z = z.astype(np.float32, copy=False)
        if not np.isfinite(z).all():
            raise ConfigError("z has non-finite entries")
        n = z.shape[0]
        out = {tower: None if p0 is None else np.broadcast_to(p0, (n, *p0.shape)).copy()
               for tower, p0 in self._p0.items()}
        for seg in self.segments:
            zs = z[:, seg.start:seg.stop]
            if not zs.any():
                # A·0 = 0 exactly: skip the product, and never draw a matrix no point uses.
                continue
            prompt = out[seg.tower]
            target = prompt[:, seg.layer] if self.config.deep else prompt
            if seg.kind == "lowrank":
                target += lowrank_offset(*self.lowrank_factors(seg), zs)
                continue
            a = self._matrix(seg)
            offset = zs if a is None else zs @ a.T
            target += offset.reshape(target.shape)
        return out["text"], out["visual"]

    def pullback(self, text_grad: np.ndarray | None,
                 visual_grad: np.ndarray | None) -> np.ndarray:
        """Chain rule through the map: prompt gradients -> (n, dim) gradients in z (A^T g).

        Args:
            text_grad: (n, *text_shape) gradient of the loss in the text prompt, or None.
            visual_grad: (n, *visual_shape) likewise for the visual prompt.
        """
        if any(seg.kind == "lowrank" for seg in self.segments):
            raise ConfigError("a 'lowrank' text subspace is not linear in z: it has no pullback "
                              "(use it with black-box methods)")
        grads = {"text": text_grad, "visual": visual_grad}
        n = next(np.shape(g)[0] for g in grads.values() if g is not None)
        out = np.zeros((n, self.space.dim))
        for seg in self.segments:
            g = np.asarray(grads[seg.tower], dtype=np.float64)
            g = (g[:, seg.layer] if self.config.deep else g).reshape(n, -1)
            a = self._matrix(seg)
            out[:, seg.start:seg.stop] = g if a is None else g @ a
        return out


def _positive(name: str, value: float) -> None:
    if not (math.isfinite(value) and value > 0):
        raise ConfigError(f"{name} must be finite and > 0 for this projection; got {value}")
