"""CraFT's head on the black box's logits, and the per-image logits it needs, in bounded chunks.

mrflogs/CraFT: main_craft.py. The head is a residual MLP on a prompt's per-image
logits, refined = logits + MLP(logits), MLP = Linear(C, 256) -> ReLU -> Linear(256, C)
(512 hidden units in main_craft_imagenet.py), trained locally with true gradients.
Both of CraFT's objectives use ``ce_loss(input, target)``, torch's
``kl_div(log_softmax(input), softmax(target), reduction="batchmean")``, that is
KL(softmax(target) || softmax(input)) summed over classes and averaged over images:

* a candidate's fitness: CE(raw, y) + w KL(softmax(refined) || softmax(raw))
  (``PromptLearner.forward``);
* the head's loss on a batch: CE(refined, y) + w KL(softmax(raw) || softmax(refined))
  (the training loop of ``run``).

The logits are the oracle's: scale * f_image . f_text for the normalised features the
oracle returns with their logit scale (``Evaluation``), which is how the oracle computes
its own losses (``sweep.oracle.prompted``'s ``logits``; a scalar logit bias, which only
SigLIP-style models have, would shift every logit alike and change no softmax).
``candidate_logits`` forms them for a few candidates at a time, so that no more than
``max_floats`` of them exist at once: a generation of 40 candidates on ImageNet's
16,000 training images and 1,000 classes would be 640 M floats (2.6 GB) in one piece.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["LogitHead", "candidate_logits", "kl_batchmean"]


class LogitHead(nn.Module):
    """refined = logits + MLP(logits), MLP = Linear(C, hidden) -> ReLU -> Linear(hidden, C).

    Args:
        classes: C.
        hidden: the MLP's width (CraFT 256; 512 in its ImageNet script).
        generator: seeds the weights and biases, U(-1/sqrt(fan_in), 1/sqrt(fan_in)) as
            ``nn.Linear``'s default initialisation draws them.
    """

    def __init__(self, classes: int, hidden: int, generator: torch.Generator) -> None:
        super().__init__()
        self.fc1 = nn.Linear(classes, hidden)
        self.fc2 = nn.Linear(hidden, classes)
        with torch.no_grad():
            for layer in (self.fc1, self.fc2):
                bound = 1.0 / layer.in_features ** 0.5
                layer.weight.uniform_(-bound, bound, generator=generator)
                layer.bias.uniform_(-bound, bound, generator=generator)

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        """(..., C) logits -> (..., C) refined logits."""
        return logits + self.fc2(F.relu(self.fc1(logits)))


def kl_batchmean(input_logits: torch.Tensor, target_logits: torch.Tensor) -> torch.Tensor:
    """CraFT's ``ce_loss``: KL(softmax(target) || softmax(input)), summed over the last axis
    and averaged over the rows of the second-last ((..., m, C) -> (...,))."""
    log_input = F.log_softmax(input_logits, dim=-1)
    log_target = F.log_softmax(target_logits, dim=-1)
    return (log_target.exp() * (log_target - log_input)).sum(dim=-1).mean(dim=-1)


def candidate_logits(image: np.ndarray, text: np.ndarray, scale: float,
                     max_floats: int) -> Iterator[tuple[slice, torch.Tensor]]:
    """The per-image logits of each candidate, a few candidates at a time.

    Args:
        image: (1 | n, m, D) normalised image features (one row shared by all candidates,
            or one per candidate).
        text: (n, C, D) normalised class text features of n candidates.
        scale: the logit scale.
        max_floats: at most this many logits at once (at least one candidate's).

    Yields:
        (candidates, logits): a slice of the n candidates and their (k, m, C) float32 logits.
    """
    n, classes = text.shape[0], text.shape[1]
    m = image.shape[1]
    per = max(1, int(max_floats) // max(1, m * classes))
    for start in range(0, n, per):
        part = slice(start, min(start + per, n))
        img = torch.as_tensor(np.asarray(image[part] if image.shape[0] == n else image,
                                         dtype=np.float32))
        txt = torch.as_tensor(np.asarray(text[part], dtype=np.float32))
        yield part, scale * img @ txt.transpose(1, 2)
