"""The sim-to-real bridge: env policies in the real-time loop (`env_policy.EnvPolicyAdapter`) and a deploy session
against the simulated player (`deploy.deploy`). See docs/protocol.md ("Env policies in the loop") and
docs/architecture.md ("Layers").
"""
