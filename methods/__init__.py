"""The mathematics of black-box prompt tuning: pure numpy/torch, no Ray, no open_clip.

``REGISTRY`` maps every method name to its config and class; it is filled
here, explicitly, from ``METHODS``, the one list of method names. A method's
module (and torch, cma or pypop7 behind it) is imported only when the method
is first made, so importing this package or listing the names stays cheap.
"""

from methods.base import Evaluation, Method, PromptConfig, SearchSpace
from methods.errors import BudgetExceededError, ConfigError, PromptTuningError
from methods.registry import REGISTRY, MethodEntry, MethodSpec, Registry

_ES, _BBT, _PYPOP, _ZO, _CBBT, _CBBT_ADAPTER, _SPSA, _REFERENCES, _CRAFT, _SHARPZO = (
    "methods.es_subspace", "methods.bbt", "methods.es_pypop", "methods.zeroth_order",
    "methods.cbbt", "methods.zo_adapter", "methods.spsa_methods", "methods.references",
    "methods.craft", "methods.sharpzo",
)

#: Every method: registry name, defining module, config class, method class, summary.
METHODS: tuple[MethodSpec, ...] = (
    MethodSpec("bpt-vlm", _ES, "BPTVLMConfig", "BPTVLM",
        "BPT-VLM shallow: pycma CMA-ES over [z_L || z_V] (IJCAI 2023)",
        version=2),
    MethodSpec("bpt-vlm-deep", _ES, "BPTVLMDeepConfig", "BPTVLMDeep",
        "BPT-VLM deep: one pycma CMA-ES per layer, block-coordinate (IJCAI 2023)",
        version=2),
    MethodSpec("bbt", _BBT, "BBTConfig", "BBT",
        "BBT on CLIP: pycma CMA-ES over a text subspace, deployed by a dev draw (ICML 2022)",
        version=2),
    MethodSpec("bpt-vlm-lmcmaes", _PYPOP, "PypopESConfig", "BPTVLMLMCMAES",
        "BPT-VLM shallow with pypop7 LM-CMA-ES (Loshchilov 2014)",
        version=2),
    MethodSpec("bpt-vlm-mmes", _PYPOP, "PypopESConfig", "BPTVLMMMES",
        "BPT-VLM shallow with pypop7 MMES (He et al. 2021)",
        version=2),
    MethodSpec("bpt-vlm-lmmaes", _PYPOP, "PypopESConfig", "BPTVLMLMMAES",
        "BPT-VLM shallow with pypop7 LM-MA-ES (Loshchilov et al. 2019)",
        version=2),
    MethodSpec("zo", _ZO, "ZerothOrderConfig", "ZerothOrder",
        "zeroth-order descent: any registered estimator (config 'estimator') + Adam/SGD/SPSA",
        version=2),
    MethodSpec("cbbt", _CBBT, "CBBTConfig", "CBBT",
        "CBBT as released: 1-token text prompt by sphere ZO (q 256, Adam, per-epoch cosine)",
        version=4),
    MethodSpec("cbbt-adapter", _CBBT_ADAPTER, "CBBTAdapterConfig", "CBBTAdapter",
        "CBBT + CLIP-Adapter on returned features (RECONSTRUCTION: not in the release)",
        version=3),
    MethodSpec("cbbt-tip", _CBBT_ADAPTER, "CBBTTipConfig", "CBBTAdapter",
        "CBBT + Tip-Adapter-F cache, CBBT's alpha 3 / beta 1 (RECONSTRUCTION)", version=4),
    MethodSpec("craft", _CRAFT, "CraFTConfig", "CraFT",
        "CraFT: pycma CMA-ES (pop 40) on a 4-token text subspace, its fitness and deployed "
        "model through a head trained locally on the returned logits (ICML 2024)"),
    MethodSpec("sharpzo", _SHARPZO, "SharpZOConfig", "SharpZO",
        "SharpZO: sharpness-aware CMA-ES with 2 x dim coordinate probes, then two-sided "
        "Gaussian (MeZO) steps, on CraFT's subspace (NeurIPS 2025)"),
    MethodSpec("zip", _SPSA, "ZIPConfig", "ZIP",
        "ZIP: clipped SPSA (q 5, no momentum), 8 text tokens, low-rank 417-variable subspace",
        version=4),
    MethodSpec("blackvip-tokens", _SPSA, "BlackVIPConfig", "BlackVIP",
        "BlackVIP's SPSA-GC (q 5) on 5 visual prompt tokens, the data set's template (not "
        "BlackVIP's pixel-prompt coordinator)", version=3),
    MethodSpec("zero-shot", _REFERENCES, "ZeroShotConfig", "ZeroShot",
        "zero-shot CLIP with the hand-written template; no queries"),
    MethodSpec("coop", _REFERENCES, "CoOpConfig", "CoOp",
        "white-box CoOp (NOT black-box: true gradients, glass-box oracle), Adam",
        version=2),
)

for _spec in METHODS:
    REGISTRY.declare(_spec)
del _spec

__all__ = [
    "METHODS",
    "REGISTRY",
    "BudgetExceededError",
    "ConfigError",
    "Evaluation",
    "Method",
    "MethodEntry",
    "MethodSpec",
    "PromptConfig",
    "PromptTuningError",
    "Registry",
    "SearchSpace",
]
