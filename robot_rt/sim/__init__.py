"""The simulated far end of the robot link: robot server, camera server, rally mode and a fault-injecting proxy.

What the real-time core (`robot_rt.control`) talks to when there is no robot: `server.SimServer` (`robot-rt
sim-server`), `camera.CameraServer`, `rally.RallySource` (the envs' world against the served robot) and
`udp_proxy.FaultProxy` (tests and demos). See docs/protocol.md and docs/architecture.md ("Layers").
"""
