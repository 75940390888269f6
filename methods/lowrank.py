"""ZIP's low-rank text subspace (LOG-postech/ZIP: trainers/zip.py, projections/intrinsic.py).

With ID = intrinsic_dim_text, m = ID // tokens and rank r, the search vector z
holds U (tokens x r), s (r), V (m x r) and a shared row (m), as offsets from
ZIP's initialisation U = 0, s = 1, V = V0 ~ N(0, 1) (drawn from the seed) and
shared = 0; token i moves by F_i (U diag(s) V^T + 1 shared^T)_i. So z has
tokens*r + r + m*r + m entries (417 for 8 tokens, ID 500, rank 5), and z = 0
leaves the context where it started.

ZIP's F_i is a Fastfood transform (HGPiHB with unnormalised Hadamards,
divided so that it preserves norms on average). Here F_i is a dense Gaussian
(width x m) with entries N(0, 1/width): it preserves norms on average exactly
as Fastfood does (E |F x|^2 = |x|^2), so a step is at ZIP's scale. A step of
c with segmented-uniform magnitudes (RMS 0.764) moves a token by about
0.764 c sqrt(m (r + 1)) (../shared/reference/FIDELITY.md, ZIP). Fastfood
costs O(width log width) a token where the dense map costs width * m, which
at m = 62 is no cost worth the code. The map is bilinear in z, so it has no
pullback: black-box methods only.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["draw_factors", "lowrank_offset", "lowrank_size"]


def lowrank_size(tokens: int, intrinsic_dim: int, rank: int) -> int:
    """Entries of z: U, s, V and the shared row (417 for 8 tokens, ID 500, rank 5)."""
    row = intrinsic_dim // tokens
    return tokens * rank + rank + row * rank + row


def draw_factors(rng: np.random.Generator, tokens: int, width: int, row: int,
                 rank: int) -> tuple[np.ndarray, np.ndarray]:
    """ZIP's V0 (row, rank), N(0, 1), and the token maps F (tokens, width, row), N(0, 1/width)."""
    v0 = rng.standard_normal((row, rank), dtype=np.float32)
    maps = rng.standard_normal((tokens, width, row), dtype=np.float32)
    maps *= np.float32(1.0 / math.sqrt(width))
    return v0, maps


def lowrank_offset(v0: np.ndarray, maps: np.ndarray, z: np.ndarray) -> np.ndarray:
    """(n, tokens, width): each token's F_i applied to its row of U diag(s) V^T + shared,
    for the (n, lowrank_size) points ``z``."""
    (row, rank), tokens = v0.shape, maps.shape[0]
    n = z.shape[0]
    u, s, v, shared = np.split(z, np.cumsum([tokens * rank, rank, row * rank]), axis=1)
    u = u.reshape(n, tokens, rank)            # U = 0 + z_U
    s = 1.0 + s                               # s = 1 + z_s
    v = v0[None] + v.reshape(n, row, rank)    # V = V0 + z_V
    rows = np.einsum("ntr,nmr->ntm", u * s[:, None, :], v) + shared[:, None, :]
    return np.einsum("twm,ntm->ntw", maps, rows.astype(np.float32))
