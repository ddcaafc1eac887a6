"""Gymnasium table-tennis environments and the human behaviour model."""

from .human_model import HumanBehaviorModel, ReturnModel

__all__ = ["HumanBehaviorModel", "ReturnModel"]
