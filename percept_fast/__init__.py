"""percept_fast: fast deep-feature perceptual distances, backbones and the Perceptual Score.

Every fast path (C++ on CPU, Triton and CUDA on GPU) has a plain-PyTorch reference next to it
(``backend='torch'``) that the tests compare against.
"""

__version__ = "0.1.0"

# PerceptualMetric / perceptual_distance (percept_fast.metric), imported lazily so that `import percept_fast`
# stays light (no torch import until they are used).
_LAZY = {"PerceptualMetric": "metric", "perceptual_distance": "metric"}
# distance ops (percept_fast.ops), lazy for the same reason
_LAZY.update(
    {n: "ops" for n in ("lpips_distance", "lpips_distance_matrix", "meanpool_distance", "meanpool_distance_matrix")}
)
_LAZY.update({n: "ops" for n in ("style_distance", "style_distance_matrix")})


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
