"""Each method's published budget on a data set at a shot count (``limit = "published"``).

The numbers are the official releases' (../shared/reference/FIDELITY.md and
METHODS.md, file names theirs); where a release gives none, the rule below
says what is used instead, and why.

* CBBT (guozix/cbbt: configs/trainers/CBBT/*.yaml, Dassl's loader): epochs x
  steps per epoch x (q + 1) losses, candidate evaluations on 32-image
  mini-batches. 150 epochs (StanfordCars 80, SUN397 40, ImageNet 12), the
  first of them the warm-up epoch at lr 1e-5, which the release counts among
  them; steps = floor(train images / 32), as Dassl drops the last partial
  batch, but 1 when the set holds fewer than 32 images (a single short batch).
  q is CBBT's 256 whatever a sweep sets: the budget is the release's count of
  queries, and a smaller q spends it over more epochs. Any data set and shot
  count: the rule needs only the training-set size.
* BPT-VLM (ECNU-ICALK/BPT-VLM: configs/shallow_prompt.yaml, deep_prompt.yaml):
  its per-data-set budget in candidate evaluations, at 16 shots. Data sets it
  did not run (Flowers102, FGVCAircraft, digits, folder): 18,000, the median of
  its nine. Fewer shots: the same number, since a candidate evaluation covers
  the whole k-shot set whatever k is.
* BBT (txsun1997/Black-Box-Tuning: bbt.py): 8,000 candidate evaluations on
  the whole training set, any data set.
* ZIP (LOG-postech/ZIP): 5,000 calls of at most 128 images, any data set; and
  BlackVIP, which counts epochs, in ZIP's re-run protocol: the same 5,000 calls.
* CraFT and SharpZO (mrflogs/CraFT: main_craft.py, main_craft_imagenet.py;
  yifanycc/sharpzo: main_sharpzo.py): candidate evaluations on the whole training set,
  8,000 at 8 and 16 shots, 4,000 at 2 and 4, 2,000 at 1; ImageNet 4,000 above one shot.
  The releases branch on 1, 2, 4, 8 and 16 only (any other count falls to their ``else``,
  2,000); here a count between them takes its tier's (3: 4,000; 5-7: 4,000; above 16:
  8,000). Every request is counted: SharpZO's 2 x dim coordinate probes a generation and
  CraFT's request of the deployed prompt for its head, which the releases do not count.
* zero-shot asks nothing: 1 candidate evaluation, never spent.

Other methods (``zo``, ``coop``) have no published budget: a specification
that asks for one is refused.
"""

from __future__ import annotations

from pathlib import Path

from sweep.budget import BudgetSpec
from sweep.data import SPLIT_SIZES
from sweep.errors import ConfigError

__all__ = ["BPT_VLM_BUDGETS", "CBBT_EPOCHS", "craft_budget", "has_published_budget",
           "published_budget", "training_set_size"]

#: BPT-VLM's budgets, candidate evaluations at 16 shots (configs/*_prompt.yaml).
BPT_VLM_BUDGETS: dict[str, int] = {
    "Caltech101": 3600, "OxfordPets": 3600, "Food101": 3600, "ImageNet": 14_400,
    "SUN397": 18_000, "StanfordCars": 25_200, "EuroSAT": 25_200, "UCF101": 25_200, "DTD": 36_000,
}
#: the rule for data sets BPT-VLM did not run: the median of its nine budgets.
BPT_VLM_OTHER = 18_000
#: CBBT's epochs (configs/trainers/CBBT/*.yaml); 150 elsewhere.
CBBT_EPOCHS: dict[str, int] = {"StanfordCars": 80, "SUN397": 40, "ImageNet": 12}
CBBT_DEFAULT_EPOCHS, CBBT_BATCH, CBBT_Q = 150, 32, 256

_CBBT = ("cbbt", "cbbt-adapter", "cbbt-tip")
_BPT_VLM = ("bpt-vlm", "bpt-vlm-deep", "bpt-vlm-lmcmaes", "bpt-vlm-mmes", "bpt-vlm-lmmaes")
_CALLS = ("zip", "blackvip-tokens")
_CRAFT_LINEAGE = ("craft", "sharpzo")


def has_published_budget(method: str) -> bool:
    return method in (*_CBBT, *_BPT_VLM, *_CALLS, *_CRAFT_LINEAGE, "bbt", "zero-shot")


def craft_budget(dataset: str, shots: int) -> int:
    """CraFT's and SharpZO's budget in candidate evaluations (the module docstring)."""
    if shots >= 8:
        return 4000 if dataset == "ImageNet" else 8000
    return 4000 if shots >= 2 else 2000


def training_set_size(dataset: str, shots: int, data_root: str | Path | None = None) -> int:
    """Training images of a ``shots``-shot task: shots x classes.

    Raises:
        ConfigError: a ``folder`` data set without its root (its classes are its folders).
    """
    if dataset in SPLIT_SIZES:
        return shots * SPLIT_SIZES[dataset][0]
    if data_root is None or not (Path(data_root) / "train").is_dir():
        raise ConfigError(f"the published budget on {dataset!r} needs its data root, to count "
                          "its classes (the folders under train/)")
    return shots * sum(1 for p in (Path(data_root) / "train").iterdir() if p.is_dir())


def published_budget(method: str, dataset: str, shots: int, *,
                     data_root: str | Path | None = None) -> BudgetSpec:
    """The published budget of ``method`` on ``dataset`` at ``shots`` (the module docstring).

    Raises:
        ConfigError: the method has no published budget, or its rule needs a data root.
    """
    if method in _CBBT:
        images = training_set_size(dataset, shots, data_root)
        steps = images // CBBT_BATCH if images >= CBBT_BATCH else 1
        epochs = CBBT_EPOCHS.get(dataset, CBBT_DEFAULT_EPOCHS)
        return BudgetSpec(unit="candidate_evals", limit=epochs * steps * (CBBT_Q + 1))
    if method in _BPT_VLM:
        return BudgetSpec(unit="candidate_evals", limit=BPT_VLM_BUDGETS.get(dataset, BPT_VLM_OTHER))
    if method == "bbt":
        return BudgetSpec(unit="candidate_evals", limit=8000)
    if method in _CRAFT_LINEAGE:
        return BudgetSpec(unit="candidate_evals", limit=craft_budget(dataset, shots))
    if method in _CALLS:
        return BudgetSpec(unit="calls", limit=5000, batch_size=128)
    if method == "zero-shot":
        return BudgetSpec(unit="candidate_evals", limit=1)
    raise ConfigError(f"{method} has no published budget; give it a budget of its own")
