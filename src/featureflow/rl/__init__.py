"""Reinforcement learning with world models: ToyWorld with an agent, Gymnasium envs, CEM/MPC planning.

Needs the ``gym`` extra (``pip install featureflow[gym]``, which installs gymnasium).

Example:
    >>> from featureflow.rl import ToyWorldEnv
    >>> env = ToyWorldEnv(resolution=16)
    >>> obs, info = env.reset(seed=0)
    >>> obs.shape, env.action_space.shape
    ((16, 16, 3), (2,))
"""

try:
    import gymnasium as _gymnasium  # noqa: F401
except ImportError as err:  # pragma: no cover - depends on the installed extras
    raise ImportError("featureflow.rl needs gymnasium: pip install 'featureflow[gym]'") from err

from featureflow.rl.action_model import LatentPlanningModel, pixel_world_model
from featureflow.rl.agent_world import AGENT_COLOUR, AgentClip, AgentToyWorld, step_with_actions
from featureflow.rl.costs import (
    AgentDistanceCost,
    LatentGoalCost,
    SegmentationGoalCost,
    agent_mask_from_rgb,
    horizon_weights,
    mask_centroid,
    pixels_to_floor,
)
from featureflow.rl.diagnostics import UNIT_COMMANDS, ActionResponse, action_response, resting_start
from featureflow.rl.envs import ToyWorldEnv, rgb_to_uint8
from featureflow.rl.imagined import ImaginedEnv
from featureflow.rl.mpc import EpisodeResult, MPCController, evaluate_policy, random_policy, run_episode
from featureflow.rl.planner import RISKS, CEMPlanner, PlanResult, aggregate_risk
from featureflow.rl.simulator_model import SimulatorModel
from featureflow.rl.training import agent_clip_dataset, train_action_world_model

__all__ = [
    "AGENT_COLOUR",
    "AgentClip",
    "AgentToyWorld",
    "step_with_actions",
    "ToyWorldEnv",
    "ImaginedEnv",
    "rgb_to_uint8",
    "CEMPlanner",
    "PlanResult",
    "RISKS",
    "aggregate_risk",
    "MPCController",
    "EpisodeResult",
    "run_episode",
    "evaluate_policy",
    "random_policy",
    "SimulatorModel",
    "LatentPlanningModel",
    "pixel_world_model",
    "ActionResponse",
    "action_response",
    "resting_start",
    "UNIT_COMMANDS",
    "agent_clip_dataset",
    "train_action_world_model",
    "AgentDistanceCost",
    "SegmentationGoalCost",
    "LatentGoalCost",
    "agent_mask_from_rgb",
    "mask_centroid",
    "pixels_to_floor",
    "horizon_weights",
]
