"""Gymnasium table-tennis environments and the human behaviour model.

Importing this module registers `robot_rt/TableTennis-v0`, `robot_rt/TableTennisGoal-v0` and
`robot_rt/TableTennisAimGoal-v0` (one decision per ball: the scripted hitter's aim, `robot_rt.envs.aim`).
"""

import gymnasium as gym

from .core import TableTennisWorld, WorldConfig
from .human_model import HumanBehaviorModel, ReturnModel
from .observation import build_observation, observation_layout
from .scripted import BatchedScriptedPolicy, ScriptedParams
from .table_tennis import TableTennisEnv, TableTennisGoalEnv

__all__ = [
    "BatchedScriptedPolicy",
    "HumanBehaviorModel",
    "ReturnModel",
    "ScriptedParams",
    "TableTennisEnv",
    "TableTennisGoalEnv",
    "TableTennisWorld",
    "WorldConfig",
    "build_observation",
    "observation_layout",
]

for _env_id, _entry, _vector_entry, _steps in (
    ("robot_rt/TableTennis-v0", "robot_rt.envs.table_tennis:TableTennisEnv", "TableTennisVectorEnv", 1500),
    ("robot_rt/TableTennisGoal-v0", "robot_rt.envs.table_tennis:TableTennisGoalEnv", "TableTennisGoalVectorEnv", 300),
):
    if _env_id not in gym.registry:
        gym.register(
            id=_env_id,
            entry_point=_entry,
            vector_entry_point=f"robot_rt.envs.vector:{_vector_entry}",  # one native call steps all worlds
            max_episode_steps=_steps,
        )

if "robot_rt/TableTennisAimGoal-v0" not in gym.registry:
    gym.register(
        id="robot_rt/TableTennisAimGoal-v0",
        entry_point="robot_rt.envs.aim:TableTennisAimGoalEnv",
        vector_entry_point="robot_rt.envs.aim:TableTennisAimGoalVectorEnv",
        max_episode_steps=1,  # one ball, one decision
    )
