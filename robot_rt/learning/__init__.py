"""Learning loops on the table-tennis environments: GoalsEye goal-conditioned self-practice
(`robot_rt.learning.goalseye`) and iterative sim-to-real (`robot_rt.learning.is2r`)."""
