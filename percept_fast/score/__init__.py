"""The Perceptual Score: BAPPS reader, 2AFC / JND scoring, PSNR/SSIM baselines and the evaluation runner."""

from .bapps import JND_SUBSETS, TWOAFC_SUBSETS, BAPPSError, JNDDataset, TwoAFCDataset, list_subsets
from .baselines import psnr, ssim
from .score import aggregate, bootstrap_aggregate_ci, bootstrap_ci, jnd_map, twoafc_score, twoafc_scores, voc_ap

__all__ = [
    "BAPPSError",
    "JNDDataset",
    "JND_SUBSETS",
    "TWOAFC_SUBSETS",
    "TwoAFCDataset",
    "aggregate",
    "bootstrap_aggregate_ci",
    "bootstrap_ci",
    "jnd_map",
    "list_subsets",
    "psnr",
    "ssim",
    "twoafc_score",
    "twoafc_scores",
    "voc_ap",
]
