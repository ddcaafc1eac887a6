"""percept_fast.ops: fused deep-feature distance ops with 'torch' | 'cpu' | 'triton' | 'cuda' backends.

Each op lives in its own module (reference, Triton kernel, custom-op registration, autograd, maths in the
docstring); shared validation / backend plumbing is in :mod:`percept_fast.ops._common`.
"""

from ._common import BACKENDS, BackendUnavailableError, available_backends

__all__ = ["BACKENDS", "BackendUnavailableError", "available_backends"]

# --- lpips_distance / meanpool_distance (owned by the lpips/meanpool ops) ---
# (added when the op modules land)

# --- style_distance / style_distance_matrix (added by the style_distance op) ---
# from .style_distance import style_distance, style_distance_matrix
# __all__ += ["style_distance", "style_distance_matrix"]
