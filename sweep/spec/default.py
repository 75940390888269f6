"""The embedded default specification: what ``python -m sweep.launch`` runs with no file.

A copy of ``sweeps/default.toml`` kept in the package, so that the command
needs no file on disk; ``tests/test_spec.py`` keeps the two equal.
"""

__all__ = ["DEFAULT_SPEC_TOML"]

#: The embedded default, byte-identical to sweeps/default.toml (tests/test_spec.py checks it).
DEFAULT_SPEC_TOML = """\
# The embedded default sweep: what `python -m sweep.launch` runs with no arguments.
#
# A small but complete sweep that runs on any laptop, CPU only: the tiny CLIP
# and two tasks of the embedded suite that ship with the package (inverted and
# low-contrast digits, where tuning has room), three methods, two seeds, and a
# budget that keeps the whole sweep to a few minutes on 2 cores.
# sweep/spec/default.py holds a byte-identical copy (DEFAULT_SPEC_TOML); a test keeps
# the two equal. sweeps/coop16.toml documents every key.

# Results go to results/<name>/.
name = "default"
description = "embedded default: tiny CLIP on two shifted digit tasks; BPT-VLM, CBBT and BBT on CPU"

[model]
# The embedded tiny CLIP: its weights ship with the package, so no tag or checkpoint.
name = "promptsweep-tiny"

[data]
datasets = ["digits-inverted", "digits-lowcontrast"]
shots = [16]
seeds = [1, 2]

[budget]
# One candidate evaluation is one prompt scored in one request: the whole
# 16-shot training set for BPT-VLM and BBT, a 32-image mini-batch for CBBT.
unit = "candidate_evals"
limit = 600
checkpoints = 8

[search]
methods = ["bpt-vlm", "cbbt", "bbt"]
samples = 2
seed = 0
sampler = "tpe"
scheduler = "none"
metric = "val_acc"

[resources]
concurrency = 2
actors = 1
gpus_per_actor = 0

# CBBT's published q = 256 costs 257 evaluations a step: 2 steps in 600.
[methods.cbbt]
params = { q = 16 }

# The tiny model's prompts hold 8 x 64 = 512 text and 5 x 64 = 320 visual
# numbers: subspaces of 500 or 1,000 would not be smaller than the prompt.
[methods.bpt-vlm.space]
intrinsic_dim_text = { choices = [50, 100, 250] }
intrinsic_dim_visual = { choices = [50, 100, 250] }

[methods.bbt.space]
intrinsic_dim_text = { choices = [50, 100, 250] }
"""
