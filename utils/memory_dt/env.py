"""The Chapter 2 task: MiniGrid's memory room at size 7 with the agent always starting in one place.

Importing this module registers ``MiniGrid-MemoryS7FixedStart-v0`` with gymnasium. The 7x7 grid
(``#`` wall, ``K``/``A`` key or ball, ``>`` the agent, ``.`` floor)::

    x: 0123456
       #######  y=0
       #####A#  y=1   candidate (5, 1); standing on (5, 2) below it "reaches" it
       #K..#.#  y=2   instruction object at (1, 2)
       #>....#  y=3   agent starts at (1, 3) facing right; hallway (4, 3), junction (5, 3)
       #...#.#  y=4
       #####K#  y=5   candidate (5, 5); standing on (5, 4) above it "reaches" it
       #######  y=6

The instruction object (a green key or ball) sits beside the start; the two candidates at the
end of the hallway are one key and one ball. Stepping onto the cell next to the candidate that
matches the instruction ends the episode with reward ``1 - 0.9 * steps / 50``; stepping next to
the other one ends it with reward 0; after 50 steps the episode is truncated with reward 0. The
shortest successful episode is 4 forwards, one turn, one forward: 6 steps, return 0.892.

Because the start is fixed, an episode begins in one of four :data:`CONFIGURATIONS`
(instruction key or ball, times whether its twin is at the top or the bottom).
``env.reset(options={"configuration": i})`` starts configuration ``i`` deterministically;
``env.reset(seed=s)`` draws one at random, reproducibly.

Observations are MiniGrid's usual dict; :func:`encode_observation` turns its 7x7x3 ``image``
into the 980 one-hot features the decision transformer reads, and :data:`FEATURE_NAMES` names
each feature ``"<channel>@(x,y)"`` in the agent's view (the agent stands at view ``(3, 6)``
looking towards ``y = 0``; ``x = 2`` is the column on its left).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch
from jaxtyping import Float, Int
from minigrid.core.constants import COLOR_TO_IDX, OBJECT_TO_IDX, STATE_TO_IDX
from minigrid.core.world_object import Ball, Key
from minigrid.envs.memory import MemoryEnv
from torch import Tensor

ENV_ID = "MiniGrid-MemoryS7FixedStart-v0"
SIZE = 7
MAX_STEPS = 50
START_POSITION = (1, 3)
START_DIRECTION = 0  # facing right (positive x)
INSTRUCTION_POSITION = (1, 2)
TOP_CANDIDATE_POSITION = (5, 1)
BOTTOM_CANDIDATE_POSITION = (5, 5)
OPTIMAL_EPISODE_LENGTH = 6
BEST_RETURN = 1 - 0.9 * OPTIMAL_EPISODE_LENGTH / MAX_STEPS  # 0.892

ACTION_NAMES: tuple[str, ...] = ("left", "right", "forward", "pickup", "drop", "toggle", "done")
N_ACTIONS = len(ACTION_NAMES)

# Configuration i: instruction object INSTRUCTIONS[i // 2], its twin at SIDES[i % 2].
INSTRUCTIONS: tuple[str, ...] = ("key", "ball")
SIDES: tuple[str, ...] = ("top", "bottom")
CONFIGURATIONS: tuple[str, ...] = tuple(
    f"{instruction}-{side}" for instruction in INSTRUCTIONS for side in SIDES
)

VIEW_SIZE = 7
OBJECT_NAMES: tuple[str, ...] = tuple(sorted(OBJECT_TO_IDX, key=OBJECT_TO_IDX.__getitem__))
COLOR_NAMES: tuple[str, ...] = tuple(sorted(COLOR_TO_IDX, key=COLOR_TO_IDX.__getitem__))
STATE_NAMES: tuple[str, ...] = tuple(sorted(STATE_TO_IDX, key=STATE_TO_IDX.__getitem__))
# The 20 one-hot channels of a view cell: 11 object types, then 6 colours, then 3 door states.
CHANNEL_NAMES: tuple[str, ...] = OBJECT_NAMES + COLOR_NAMES + STATE_NAMES
N_CHANNELS = len(CHANNEL_NAMES)
N_FEATURES = N_CHANNELS * VIEW_SIZE * VIEW_SIZE  # 980
# Feature index = channel * 49 + x * 7 + y (channel-major, then view column x, then row y).
FEATURE_NAMES: tuple[str, ...] = tuple(
    f"{channel}@({x},{y})"
    for channel in CHANNEL_NAMES
    for x in range(VIEW_SIZE)
    for y in range(VIEW_SIZE)
)


def feature_index(channel: str, x: int, y: int) -> int:
    """Index into the 980 features of channel ``channel`` (e.g. ``"key"``) at view cell ``(x, y)``."""
    if channel not in CHANNEL_NAMES:
        raise ValueError(f"Unknown channel {channel!r}; channels are {', '.join(CHANNEL_NAMES)}")
    if not (0 <= x < VIEW_SIZE and 0 <= y < VIEW_SIZE):
        raise ValueError(f"View cell ({x}, {y}) is outside the {VIEW_SIZE}x{VIEW_SIZE} view")
    return CHANNEL_NAMES.index(channel) * VIEW_SIZE * VIEW_SIZE + x * VIEW_SIZE + y


class MemoryFixedStartEnv(MemoryEnv):
    """MiniGrid's ``MemoryEnv`` (size 7, 50 steps) with the agent always at (1, 3) facing right.

    ``reset(options={"configuration": i})`` forces configuration ``i`` (index into
    :data:`CONFIGURATIONS`); without it the configuration is drawn from the seeded generator.
    ``info["configuration"]`` from ``reset`` and the attribute ``configuration`` say which one.
    """

    def __init__(self, size: int = SIZE, max_steps: int = MAX_STEPS, **kwargs: Any) -> None:
        self.configuration: int = -1
        self._forced_configuration: int | None = None
        super().__init__(size=size, random_length=False, max_steps=max_steps, **kwargs)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        forced = (options or {}).get("configuration")
        if forced is not None and (
            isinstance(forced, bool) or not isinstance(forced, (int, np.integer))
            or not 0 <= int(forced) < len(CONFIGURATIONS)
        ):
            raise ValueError(
                f"options['configuration'] must be an int in 0..{len(CONFIGURATIONS) - 1} "
                f"({', '.join(CONFIGURATIONS)}), got {forced!r}"
            )
        self._forced_configuration = None if forced is None else int(forced)
        observation, info = super().reset(seed=seed, options=options)
        info["configuration"] = self.configuration
        return observation, info

    def _gen_grid(self, width: int, height: int) -> None:
        # The walls, hallway and candidate positions are MemoryEnv's; only the start changes.
        super()._gen_grid(width, height)
        if self._forced_configuration is None:
            # MemoryEnv already drew the objects from the seeded generator; read them back.
            instruction = self.grid.get(*INSTRUCTION_POSITION).type
            top = self.grid.get(*TOP_CANDIDATE_POSITION).type
            self.configuration = INSTRUCTIONS.index(instruction) * 2 + (0 if top == instruction else 1)
        else:
            self.configuration = self._forced_configuration
            instruction = INSTRUCTIONS[self.configuration // 2]
            twin_on_top = SIDES[self.configuration % 2] == "top"
            kinds = {"key": Key, "ball": Ball}
            other = "ball" if instruction == "key" else "key"
            top, bottom = (instruction, other) if twin_on_top else (other, instruction)
            self.grid.set(*INSTRUCTION_POSITION, kinds[instruction]("green"))
            self.grid.set(*TOP_CANDIDATE_POSITION, kinds[top]("green"))
            self.grid.set(*BOTTOM_CANDIDATE_POSITION, kinds[bottom]("green"))
            above_top = (TOP_CANDIDATE_POSITION[0], TOP_CANDIDATE_POSITION[1] + 1)
            below_bottom = (BOTTOM_CANDIDATE_POSITION[0], BOTTOM_CANDIDATE_POSITION[1] - 1)
            self.success_pos, self.failure_pos = (
                (above_top, below_bottom) if twin_on_top else (below_bottom, above_top)
            )
        self.agent_pos = np.array(START_POSITION)
        self.agent_dir = START_DIRECTION


def register_environment() -> None:
    """Register :data:`ENV_ID` with gymnasium (idempotent; done on import)."""
    if ENV_ID not in gym.registry:
        gym.register(id=ENV_ID, entry_point=f"{__name__}:MemoryFixedStartEnv",
                     kwargs={"size": SIZE, "max_steps": MAX_STEPS})


register_environment()


def make_env(**kwargs: Any) -> gym.Env:
    """``gymnasium.make(ENV_ID)``: the fixed-start memory environment."""
    return gym.make(ENV_ID, **kwargs)


def outcome(env: gym.Env) -> str:
    """Where an episode's agent stands: ``"success"``, ``"wrong_object"`` or ``"neither"``."""
    base = env.unwrapped
    position = tuple(int(coordinate) for coordinate in base.agent_pos)
    if position == tuple(base.success_pos):
        return "success"
    if position == tuple(base.failure_pos):
        return "wrong_object"
    return "neither"


def _image_of(observation: Any) -> np.ndarray | Tensor:
    """The ``(..., 7, 7, 3)`` integer view from an observation dict or an array/tensor of views."""
    image = observation["image"] if isinstance(observation, dict) else observation
    if not isinstance(image, (np.ndarray, Tensor)):
        raise ValueError(
            f"Expected an observation dict with an 'image' or an array of shape (..., 7, 7, 3), "
            f"got {type(image).__name__}"
        ) from None
    if tuple(image.shape[-3:]) != (VIEW_SIZE, VIEW_SIZE, 3):
        raise ValueError(
            f"Observation image has shape {tuple(image.shape)}; expected (..., {VIEW_SIZE}, "
            f"{VIEW_SIZE}, 3), the 7x7 view of MiniGrid's (object, colour, state) codes"
        ) from None
    return image


def encode_observation(observation: Any) -> Float[Tensor, "... feature"]:
    """One-hot encode MiniGrid views into the 980 features of :data:`FEATURE_NAMES`.

    ``observation`` is the environment's observation dict, or an integer array/tensor of views
    of shape ``(..., 7, 7, 3)``. Each cell gets three ones: its object type, colour and state.
    """
    image = _image_of(observation)
    codes: Int[Tensor, "... 7 7 3"] = torch.as_tensor(image).long()
    limits = (len(OBJECT_NAMES), len(COLOR_NAMES), len(STATE_NAMES))
    for field, (name, limit) in enumerate(zip(("object", "colour", "state"), limits)):
        values = codes[..., field]
        if values.numel() and (int(values.min()) < 0 or int(values.max()) >= limit):
            raise ValueError(
                f"Observation {name} codes must lie in 0..{limit - 1} (MiniGrid's constants), got "
                f"values from {int(values.min())} to {int(values.max())}"
            ) from None
    return one_hot_views(codes)


def one_hot_views(codes: Int[Tensor, "... 7 7 3"]) -> Float[Tensor, "... feature"]:
    """:func:`encode_observation` without its checks, for codes already known to be valid."""
    limits = (len(OBJECT_NAMES), len(COLOR_NAMES), len(STATE_NAMES))
    one_hot = torch.cat(
        [torch.nn.functional.one_hot(codes[..., field].long(), limit) for field, limit in enumerate(limits)],
        dim=-1,
    )  # (..., x, y, channel)
    return one_hot.movedim(-1, -3).flatten(-3).float()  # (..., channel * 49 + x * 7 + y)
