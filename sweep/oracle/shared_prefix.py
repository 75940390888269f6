"""The text tower over many classes that share a prompt prefix, computed once per candidate.

Every class prompt of a candidate starts with the same tokens: the start token
and the n context vectors (``SOS X_1 .. X_n``). The text transformer is causal,
so the hidden states of these p = 1 + n positions do not depend on what follows
them: they are the same for every class. A straightforward pass recomputes them
C times per candidate; here they are computed once, and each class's own tokens
(its name, the full stop and the end-of-text token: the *suffix*) attend to the
prefix's keys and values of their layer (a key-value cache, as in language-model
decoding). For C = 10 classes of one-token names this cuts the tokens per
candidate from C (p + 3) = 120 to p + 3 C = 39; with the cut at the end-of-text
token instead of the full 77-token context, from 770.

Prefix and suffix tokens go through each block's layer norms, projections and
MLP as one matrix (one large product instead of two small ones); only the
attention is written out here, because ``nn.MultiheadAttention`` has no key-value
cache. Within a forward, classes are grouped by the length of their suffix, so no
padding is computed and the end-of-text token is always a group's last position.

Only open_clip's standard ``ResidualAttentionBlock`` (``nn.MultiheadAttention``
with packed input projection) is supported; ``supports`` says whether a text
tower qualifies, and ``PromptedCLIP`` runs the full causal pass otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["SuffixGroup", "prefix_text_features", "suffix_blocks", "supports"]


def supports(text: torch.nn.Module) -> bool:
    """Whether every block of the text tower has the structure this module reimplements."""
    for block in text.transformer.resblocks:
        attn = getattr(block, "attn", None)
        if (not isinstance(attn, torch.nn.MultiheadAttention) or not attn._qkv_same_embed_dim
                or attn.in_proj_bias is None or attn.bias_k is not None or attn.add_zero_attn
                or hasattr(block, "ln_1_kv") or hasattr(block, "ln_attn")
                or not all(hasattr(block, a) for a in ("ln_1", "ls_1", "ln_2", "mlp", "ls_2"))):
            return False
    return True


@dataclass(frozen=True)
class SuffixGroup:
    """Classes whose suffix (tokens after the prefix, up to end-of-text) has the same length."""

    classes: torch.Tensor  # (Cg,) class indices
    embeds: torch.Tensor  # (Cg, s, W) token embeddings of the suffixes

    @property
    def tokens(self) -> int:
        return self.embeds.shape[0] * self.embeds.shape[1]


def suffix_blocks(token_embeds: torch.Tensor, eot: torch.Tensor, prefix: int,
                  max_tokens: int) -> list[list[SuffixGroup]]:
    """Class prompts (C, L, W) with end-of-text positions (C,), as blocks of suffix groups.

    A block holds classes of at most about ``max_tokens`` suffix tokens, sorted by
    suffix length and grouped by it; one forward computes one block for a chunk of
    candidates, so the large matrix products see all its tokens at once.
    """
    lengths = eot - prefix + 1
    if int(lengths.min()) < 1:
        raise ValueError("every class prompt needs at least its end-of-text token after the prefix")
    order = torch.argsort(lengths, stable=True).tolist()
    blocks, block, used = [], [], 0
    for c in order:
        s = int(lengths[c])
        if block and used + s > max_tokens:
            blocks.append(block)
            block, used = [], 0
        block.append(c)
        used += s
    blocks.append(block)
    out = []
    for block in blocks:
        classes = torch.as_tensor(block, device=token_embeds.device)
        groups = []
        for s in torch.unique(lengths[classes]).tolist():
            members = classes[lengths[classes] == s]
            groups.append(SuffixGroup(members, token_embeds[members, prefix:prefix + s]))
        out.append(groups)
    return out


def _heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(..., T, W) -> (..., heads, T, W / heads)."""
    *lead, t, w = x.shape
    return x.view(*lead, t, heads, w // heads).transpose(-3, -2)


def _merge(x: torch.Tensor) -> torch.Tensor:
    """(..., heads, T, hd) -> (..., T, heads * hd)."""
    *lead, h, t, hd = x.shape
    return x.transpose(-3, -2).reshape(*lead, t, h * hd)


def _attention(block: torch.nn.Module, h: torch.Tensor, nc: int, p: int,
               shapes: list[tuple[int, int]]) -> torch.Tensor:
    """Causal self-attention of the prefix; each suffix attends to its candidate's prefix and to itself.

    h: (nc * p + sum of nc * cc * s, W) normalised hidden states: the prefix rows,
    then each group's rows; ``shapes`` gives each group's (classes cc, length s).
    """
    attn = block.attn
    heads, w = attn.num_heads, h.shape[-1]
    qkv = F.linear(h, attn.in_proj_weight, attn.in_proj_bias)
    qp, kp, vp = (_heads(t, heads) for t in qkv[:nc * p].view(nc, p, 3 * w).chunk(3, dim=-1))
    outs = [_merge(F.scaled_dot_product_attention(qp, kp, vp, is_causal=True)).reshape(nc * p, w)]
    start = nc * p
    for cc, s in shapes:
        rows = qkv[start:start + nc * cc * s].view(nc, cc, s, 3 * w)
        start += nc * cc * s
        qs, ks, vs = (_heads(t, heads) for t in rows.chunk(3, dim=-1))  # (nc, cc, H, s, hd)
        k = torch.cat([kp[:, None].expand(nc, cc, *kp.shape[1:]), ks], dim=-2)
        v = torch.cat([vp[:, None].expand(nc, cc, *vp.shape[1:]), vs], dim=-2)
        allowed = torch.ones(s, p + s, dtype=torch.bool, device=h.device).tril(diagonal=p)
        out = F.scaled_dot_product_attention(qs, k, v, attn_mask=allowed)
        outs.append(_merge(out).reshape(nc * cc * s, w))
    return attn.out_proj(torch.cat(outs))


def _forward(text: torch.nn.Module, prefix: torch.Tensor, suffixes: list[torch.Tensor],
             deep_ctx: torch.Tensor | None) -> torch.Tensor:
    """prefix (nc, p, W) and suffixes [(nc, cc_g, s_g, W)] -> features (nc, sum cc_g, D), normalised.

    Each class's feature is taken at its last token: its end-of-text token.
    """
    nc, p, w = prefix.shape
    shapes = [tuple(x.shape[1:3]) for x in suffixes]
    pos = text.positional_embedding.to(prefix.dtype)
    x = torch.cat([(prefix + pos[:p]).reshape(nc * p, w)]
                  + [(x + pos[p:p + x.shape[2]]).reshape(-1, w) for x in suffixes])
    for i, block in enumerate(text.transformer.resblocks):
        if deep_ctx is not None and i > 0:  # VPT-deep: the context positions are overwritten
            head = x[:nc * p].view(nc, p, w)
            head = torch.cat([head[:, :1], deep_ctx[:, i].to(x.dtype)], dim=1)
            x = torch.cat([head.reshape(nc * p, w), x[nc * p:]])
        x = x + block.ls_1(_attention(block, block.ln_1(x), nc, p, shapes))
        x = x + block.ls_2(block.mlp(block.ln_2(x)))
    lasts, start = [], nc * p
    for cc, s in shapes:
        lasts.append(x[start:start + nc * cc * s].view(nc, cc, s, w)[:, :, -1])
        start += nc * cc * s
    last = text.ln_final(torch.cat(lasts, dim=1))
    proj = text.text_projection
    if proj is not None:
        last = proj(last) if isinstance(proj, torch.nn.Linear) else last @ proj
    return F.normalize(last.float(), dim=-1)


def prefix_text_features(text: torch.nn.Module, sos: torch.Tensor, ctx: torch.Tensor,
                         blocks: list[list[SuffixGroup]], num_classes: int, *, deep: bool,
                         max_tokens: int) -> torch.Tensor:
    """Normalised class embeddings (n, C, D) for n candidate contexts.

    Args:
        text: the text tower (``PromptedCLIP._text``).
        sos: (W,) embedding of the start token.
        ctx: (n, n_text, W) shallow or (n, L, n_text, W) deep context vectors.
        blocks: the classes' suffixes (``suffix_blocks``).
        max_tokens: bound on the tokens of one forward (memory).
    """
    n_cand = ctx.shape[0]
    first = ctx[:, 0] if deep else ctx
    prefix = torch.cat([sos.to(first.dtype).expand(n_cand, 1, -1), first], dim=1)
    p = prefix.shape[1]
    out = None
    for groups in blocks:
        classes = torch.cat([g.classes for g in groups])
        per_cand = max(1, max_tokens // (p + sum(g.tokens for g in groups)))
        for n0 in range(0, n_cand, per_cand):
            cands = slice(n0, min(n0 + per_cand, n_cand))
            nc = cands.stop - cands.start
            suffixes = [g.embeds.expand(nc, *g.embeds.shape) for g in groups]
            feats = _forward(text, prefix[cands], suffixes, ctx[cands] if deep else None)
            if out is None:
                out = feats.new_empty(n_cand, num_classes, feats.shape[-1])
            out[cands, classes] = feats
    return out
