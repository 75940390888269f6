"""Prompt injection into an open_clip CLIP: text context tokens and visual prompt tokens.

Text (CoOp style): every class's sequence is ``SOS X_1 .. X_n <class name>. EOT``;
the embeddings of the n placeholders are replaced by the context vectors,
shared by all classes. Vision (VPT/BPT-VLM style): n prompt tokens are inserted
after the class token, after the positional embedding (prompts get none) and
before ``ln_pre``. Deep prompts give one set of tokens per layer: the first is
the input prompt, and the prompt positions of the hidden state are overwritten
with the i-th set before block i (VPT-deep).

Shapes (n candidates, L layers):
    text context   shallow (n, n_text, W_text)     deep (n, L_text, n_text, W_text)
    visual prompt  shallow (n, n_visual, W_vis)     deep (n, L_vis, n_visual, W_vis)

Speed without loss of exactness: text sequences are cut after the last
end-of-text token of all classes (the causal mask means nothing after it can
reach it), tokenisation and token embeddings are computed once, and patch
embeddings of a fixed image set are computed once. Work is chunked by a
token count so that memory stays bounded for many classes and candidates.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F

from sweep.oracle.requests import PromptLayout
from sweep.oracle.shared_prefix import prefix_text_features, suffix_blocks, supports
from sweep.errors import ConfigError, ModelError

__all__ = ["PromptLayout", "PromptedCLIP"]


def _tower_text(model: torch.nn.Module) -> torch.nn.Module:
    """The module holding the text encoder's parts (CLIP itself, or CustomTextCLIP.text)."""
    return model if hasattr(model, "token_embedding") else getattr(model, "text", model)


def _chunks(total: int, size: int) -> Iterator[slice]:
    for start in range(0, total, size):
        yield slice(start, min(start + size, total))


def _run_blocks(transformer: torch.nn.Module, x: torch.Tensor, deep: torch.Tensor | None, n: int,
                hidden: list[torch.Tensor] | None, **block_kwargs) -> torch.Tensor:
    """The blocks of a text or vision transformer on x (rows, T, W), batch-first or not.

    Before block i > 0 the n prompt positions after the first token are overwritten
    with ``deep[:, i]`` (VPT-deep); when ``hidden`` is a list, the hidden state
    entering each block is appended to it.
    """
    batch_first = getattr(transformer, "batch_first", True)
    if not batch_first:
        x = x.transpose(0, 1)
    for i, block in enumerate(transformer.resblocks):
        if deep is not None and i > 0:
            prompt = deep[:, i].to(x.dtype)
            if batch_first:
                x = torch.cat([x[:, :1], prompt, x[:, 1 + n:]], dim=1)
            else:
                x = torch.cat([x[:1], prompt.transpose(0, 1), x[1 + n:]], dim=0)
        if hidden is not None:
            hidden.append(x)
        x = block(x, **block_kwargs)
    if not batch_first:
        x = x.transpose(0, 1)
    return x


class PromptedCLIP:
    """Text and image encoders of one CLIP with injected prompts, for a fixed class list.

    Args:
        model: an open_clip CLIP in eval mode (parameters frozen).
        tokenizer: its tokenizer.
        classnames: the class names, in label order.
        layout: the prompt layout.
        max_batch_tokens: upper bound on tokens per transformer forward (memory bound).
    """

    def __init__(self, model: torch.nn.Module, tokenizer, classnames: tuple[str, ...],
                 layout: PromptLayout, max_batch_tokens: int = 1 << 14,
                 template: str | None = None) -> None:
        self.model = model
        self.layout = layout
        self.max_batch_tokens = max_batch_tokens
        self.classnames = tuple(classnames)
        self.tokenizer = tokenizer
        text = _tower_text(model)
        self._text = text
        pool = getattr(text, "text_pool_type", getattr(text, "pool_type", None))
        if (pool not in ("argmax", "eos") or getattr(text, "cls_emb", None) is not None
                or getattr(text, "use_pad_mask", False) or text.attn_mask is None):
            raise ModelError(
                f"text tower of type {type(text).__name__} (pool type {pool!r}) is not supported: "
                "context prompts need a causal text transformer pooled at the end-of-text token"
            )
        self._pool = pool
        self._eos_id = getattr(text, "text_eos_id", getattr(text, "eos_id", None))
        self.text_width = text.token_embedding.weight.shape[1]
        proj = text.text_projection
        #: D, the dimension of the text and image features.
        self.embed_dim = (self.text_width if proj is None else
                          proj.out_features if isinstance(proj, torch.nn.Linear) else proj.shape[1])
        self.text_layers = len(text.transformer.resblocks)
        self.device = text.token_embedding.weight.device

        visual = model.visual
        self.is_vit = all(hasattr(visual, a) for a in ("conv1", "class_embedding", "transformer", "ln_pre"))
        if layout.n_visual > 0 and not self.is_vit:
            raise ModelError(
                f"visual prompt tokens need a ViT image tower; this model's is {type(visual).__name__} "
                "(set n_visual = 0 for ResNet backbones)"
            )
        if self.is_vit and getattr(visual, "attn_pool", None) is not None and layout.n_visual > 0:
            raise ModelError("visual prompts are not supported on image towers with attention pooling")
        self.visual_width = visual.class_embedding.shape[0] if self.is_vit else 0
        self.visual_layers = len(visual.transformer.resblocks) if self.is_vit else 0

        if layout.template:  # no context: the data set's own hand-written template (BlackVIP)
            if template is None:
                raise ModelError("the layout asks for the data set's template, but none was given")
            prompts = [template.format(name) for name in self.classnames]
        else:
            placeholder = " ".join(["X"] * layout.n_text)
            prompts = [f"{placeholder} {name}.".strip() for name in self.classnames]
        self._tokens, self._eot = self._tokenize(prompts)
        with torch.no_grad():
            self._token_embeds = text.token_embedding(self._tokens).float()  # (C, L_cut, W)
        #: class prompts share the prefix SOS + context: computed once per candidate when the
        #: tower's blocks are the standard ones (sweep.oracle.shared_prefix), else a full causal pass.
        self.shares_prefix = supports(text)
        if self.shares_prefix:
            self._suffixes = suffix_blocks(
                self._token_embeds, self._eot, 1 + layout.n_text, max_batch_tokens)

    # ------------------------------------------------------------------ shapes
    @property
    def text_shape(self) -> tuple[int, ...]:
        """Shape of one candidate's text context (without the leading candidate axis)."""
        n, w = self.layout.n_text, self.text_width
        return (self.text_layers, n, w) if self.layout.deep else (n, w)

    @property
    def visual_shape(self) -> tuple[int, ...]:
        n, w = self.layout.n_visual, self.visual_width
        return (self.visual_layers, n, w) if self.layout.deep else (n, w)

    def initial_text(self) -> torch.Tensor:
        """Starting context: embeddings of ``text_init``, else zeros (deep layers >0: zeros)."""
        ctx = torch.zeros(self.text_shape, device=self.device)
        if self.layout.text_init:
            tokens, eot = self._tokenize([self.layout.text_init])
            n_words = int(eot[0]) - 1
            if n_words != self.layout.n_text:
                raise ConfigError(
                    f"prompt layout: text_init {self.layout.text_init!r} has {n_words} tokens "
                    f"but n_text is {self.layout.n_text}"
                )
            with torch.no_grad():
                emb = self._text.token_embedding(tokens[0, 1:1 + n_words]).float()
            if self.layout.deep:
                ctx[0] = emb
            else:
                ctx[:] = emb
        return ctx

    def initial_visual(self) -> torch.Tensor:
        return torch.zeros(self.visual_shape, device=self.device)

    # ------------------------------------------------------------------ text
    def _tokenize(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = self.tokenizer(texts).to(self.device)
        if self._pool == "argmax":
            eot = tokens.argmax(dim=-1)
        else:
            eot = (tokens == self._eos_id).int().argmax(dim=-1)
        cut = int(eot.max()) + 1  # exact: the causal mask hides later positions from the EOT
        return tokens[:, :cut], eot

    def encode_texts(self, texts: list[str]) -> torch.Tensor:
        """Plain (unprompted) text features, normalised: (len(texts), D). For zero-shot templates."""
        tokens, eot = self._tokenize(texts)
        x = self._text.token_embedding(tokens).float()
        return self._text_forward(x, eot, None)

    def _text_forward(self, x: torch.Tensor, eot: torch.Tensor, deep_ctx: torch.Tensor | None,
                      hidden: list[torch.Tensor] | None = None) -> torch.Tensor:
        """x: (rows, L, W) input embeddings; deep_ctx: (rows, L_text, n, W) or None.

        When ``hidden`` is a list, the hidden state entering each block is appended to it.
        """
        text = self._text
        length = x.shape[1]
        x = x + text.positional_embedding[:length].to(x.dtype)
        mask = text.attn_mask[:length, :length]
        x = _run_blocks(text.transformer, x, deep_ctx, self.layout.n_text, hidden, attn_mask=mask)
        x = text.ln_final(x)
        x = x[torch.arange(x.shape[0], device=x.device), eot]
        proj = text.text_projection
        if proj is not None:
            x = proj(x) if isinstance(proj, torch.nn.Linear) else x @ proj
        return F.normalize(x.float(), dim=-1)

    def text_features(self, ctx: torch.Tensor) -> torch.Tensor:
        """Class embeddings for each candidate context: (n, C, D), normalised.

        Args:
            ctx: ``(n, *text_shape)`` context vectors.
        """
        if self.shares_prefix:
            return prefix_text_features(
                self._text, self._token_embeds[0, 0], ctx, self._suffixes, len(self.classnames),
                deep=self.layout.deep, max_tokens=self.max_batch_tokens)
        n_cand = ctx.shape[0]
        n_cls, length, _ = self._token_embeds.shape
        n = self.layout.n_text
        rows = n_cand * n_cls
        per_chunk = max(1, self.max_batch_tokens // length)
        out = []
        for sl in _chunks(rows, per_chunk):
            idx = torch.arange(sl.start, sl.stop, device=self.device)
            cand, cls = idx // n_cls, idx % n_cls
            base = self._token_embeds[cls]
            if n > 0:
                first = ctx[cand, 0] if self.layout.deep else ctx[cand]
                x = torch.cat([base[:, :1], first.to(base.dtype), base[:, 1 + n:]], dim=1)
            else:
                x = base
            deep = ctx[cand] if self.layout.deep and n > 0 else None
            out.append(self._text_forward(x, self._eot[cls], deep))
        return torch.cat(out).view(n_cand, n_cls, -1)

    def text_hidden_states(self, ctx: torch.Tensor | None) -> list[torch.Tensor]:
        """Hidden states entering each text block for the class prompts with context ``ctx`` (1, ...)."""
        n = self.layout.n_text
        x = self._token_embeds
        if ctx is not None and n > 0:
            first = ctx[0, 0] if self.layout.deep else ctx[0]
            x = torch.cat([x[:, :1], first.expand(x.shape[0], -1, -1), x[:, 1 + n:]], dim=1)
        hidden: list[torch.Tensor] = []
        self._text_forward(x, self._eot, None, hidden)
        return hidden

    def visual_hidden_states(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Hidden states entering each vision block for ``images`` without prompts."""
        hidden: list[torch.Tensor] = []
        self._image_forward(self.patch_embeddings(images), None, hidden)
        return hidden

    # ------------------------------------------------------------------ images
    def patch_embeddings(self, images: torch.Tensor) -> torch.Tensor:
        """[CLS, patches] + positional embedding, before ln_pre: (m, 1 + P, W_vis). Prompt-free."""
        visual = self.model.visual
        x = visual.conv1(images)
        x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)
        cls = visual.class_embedding.to(x.dtype).view(1, 1, -1).expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x], dim=1)
        return x + visual.positional_embedding.to(x.dtype)

    def _image_forward(self, x: torch.Tensor, deep_vis: torch.Tensor | None,
                       hidden: list[torch.Tensor] | None = None) -> torch.Tensor:
        """x: (rows, 1 + n + P, W_vis) embeddings with prompts inserted; ``hidden`` as for text."""
        visual = self.model.visual
        x = _run_blocks(visual.transformer, visual.ln_pre(x), deep_vis, self.layout.n_visual, hidden)
        pooled, _ = visual._pool(x)
        if visual.proj is not None:
            pooled = pooled @ visual.proj
        return F.normalize(pooled.float(), dim=-1)

    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        """Prompt-free image features, normalised: (m, D). Works for any backbone."""
        if not self.is_vit:
            return F.normalize(self.model.encode_image(images).float(), dim=-1)
        per_chunk = max(1, self.max_batch_tokens // (1 + self._num_patches()))
        return torch.cat([
            self._image_forward(self.patch_embeddings(images[sl]), None)
            for sl in _chunks(images.shape[0], per_chunk)
        ])

    def _num_patches(self) -> int:
        return int(self.model.visual.positional_embedding.shape[0]) - 1

    def prompted_image_features(self, patches: torch.Tensor, vis: torch.Tensor) -> torch.Tensor:
        """Image features of every image under every candidate's visual prompt: (n, m, D).

        Args:
            patches: (m, 1 + P, W_vis) from ``patch_embeddings``.
            vis: ``(n, *visual_shape)`` visual prompts.
        """
        n_cand, m = vis.shape[0], patches.shape[0]
        tokens = patches.shape[1] + self.layout.n_visual
        per_chunk = max(1, self.max_batch_tokens // tokens)
        out = []
        for sl in _chunks(n_cand * m, per_chunk):
            idx = torch.arange(sl.start, sl.stop, device=patches.device)
            cand, img = idx // m, idx % m
            p = patches[img]
            first = vis[cand, 0] if self.layout.deep else vis[cand]
            x = torch.cat([p[:, :1], first.to(p.dtype), p[:, 1:]], dim=1)
            out.append(self._image_forward(x, vis[cand] if self.layout.deep else None))
        return torch.cat(out).view(n_cand, m, -1)

    def logits(self, image_features: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
        """CLIP logits: scale * cos (+ bias). image (n|1, m, D), text (n, C, D) -> (n, m, C)."""
        scale = self.model.logit_scale.exp().float()
        out = scale * image_features @ text_features.transpose(1, 2)
        bias = getattr(self.model, "logit_bias", None)
        return out + bias.float() if bias is not None else out
