"""percept_fast.ops: fused deep-feature distance ops with 'torch' | 'cpu' | 'triton' | 'cuda' backends.

Each op lives in its own module (reference, Triton kernel, custom-op registration, autograd, maths in the
docstring); shared validation / backend plumbing is in :mod:`percept_fast.ops._common`.
"""

from ._common import BACKENDS, BackendUnavailableError, available_backends

__all__ = ["BACKENDS", "BackendUnavailableError", "available_backends"]

# --- lpips_distance / meanpool_distance (owned by the lpips/meanpool ops) ---
from .lpips_distance import lpips_distance, lpips_distance_matrix  # noqa: E402
from .meanpool_distance import meanpool_distance, meanpool_distance_matrix  # noqa: E402

__all__ += ["lpips_distance", "lpips_distance_matrix", "meanpool_distance", "meanpool_distance_matrix"]

# --- style_distance / style_distance_matrix (added by the style_distance op) ---
from .style_distance import style_distance, style_distance_matrix  # noqa: E402

__all__ += ["style_distance", "style_distance_matrix"]
