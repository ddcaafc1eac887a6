"""percept_fast: fast deep-feature perceptual distances, backbones and the Perceptual Score.

Every fast path (C++ on CPU, Triton and CUDA on GPU) has a plain-PyTorch reference next to it
(``backend='torch'``) that the tests compare against.
"""

__version__ = "0.1.0"
