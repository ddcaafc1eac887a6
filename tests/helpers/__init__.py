"""Shared test helpers: tensors.py (percept_fast ops), robot.py (robot_rt)."""
