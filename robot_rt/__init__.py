"""robot_rt: table-tennis robot physics, ball state estimation, real-time control, environments and learning.

Frame convention (used everywhere, see docs/frames.md): origin on the floor below the centre of the table,
x along the table's long axis pointing to the robot's side, y across the table (right-handed), z up.
The table surface is the plane z = 0.76 m; the net lies in the plane x = 0. Units are SI (m, s, rad).
"""

__version__ = "0.1.0"
