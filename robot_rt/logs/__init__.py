"""Run-log tools above the real-time core: `robot-rt replay` (summary, plots) and the MCAP / Rerun exporters.

They read what `robot_rt.control` wrote and may use the estimation and ball physics (the MCAP export recomputes
the ball's predictions), which the real-time core does not import. See docs/architecture.md ("Layers").
"""
