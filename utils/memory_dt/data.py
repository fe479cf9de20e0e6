"""Demonstrations for the decision transformer: a scripted agent with controlled noise.

Each episode is one of four kinds, drawn with :data:`DEFAULT_DATA_CONFIG`'s ``kind_weights``:

- ``optimal``: the shortest path to the matching object (6 steps, return 0.892);
- ``noisy``: the same planner, but at each step with probability ``epsilon`` (drawn per episode)
  a uniformly random action instead; it recovers, so successes arrive later and returns spread
  over the whole range (down to 0.1 at the 50-step limit), and some noisy walks end at the wrong
  object or time out;
- ``wrong``: the planner walks to the *other* object (return 0), a little noise included;
- ``random``: uniformly random actions (mostly timeouts, return 0).

So the return an episode achieved says how it behaved, which is what return conditioning needs.
The planner is a breadth-first search over (cell, direction) on the episode's own grid. The whole
set is a deterministic function of ``seed``: ``python -m utils.memory_dt make-data``.

Tensors are stored flat, one row per decision step, so a batch of 9-step windows is gathered on
the training device with a few index operations (:meth:`Demonstrations.windows`).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, fields
from functools import lru_cache
from typing import Any

import numpy as np
import torch
from jaxtyping import Bool, Float, Int, UInt8
from minigrid.core.constants import DIR_TO_VEC
from torch import Tensor

from utils.memory_dt.env import (
    ACTION_NAMES,
    N_ACTIONS,
    make_env,
    one_hot_views,
    outcome,
)

EPISODE_KINDS: tuple[str, ...] = ("optimal", "noisy", "wrong", "random")
OUTCOMES: tuple[str, ...] = ("success", "wrong_object", "timeout")
LEFT, RIGHT, FORWARD = (ACTION_NAMES.index(name) for name in ("left", "right", "forward"))

DEFAULT_DATA_CONFIG: dict[str, Any] = {
    "n_episodes": 12_000,
    "seed": 2024,
    "kind_weights": {"optimal": 0.3, "noisy": 0.45, "wrong": 0.2, "random": 0.05},
    "noisy_epsilon": [0.05, 0.9],  # per-episode chance of a random action, uniform in this range
    "wrong_epsilon": [0.0, 0.3],
}


@lru_cache(maxsize=64)
def _distance_table(walkable: bytes, width: int, target: tuple[int, int],
                    blocked: tuple[int, int]) -> dict[tuple[int, int, int], int]:
    """Fewest left/right/forward steps from each (x, y, direction) to stand on ``target``.

    ``walkable`` is the grid's row-major mask (``x + y * width``); ``blocked`` (the other
    candidate's cell, which ends the episode) is never walked through.
    """
    def free(x: int, y: int) -> bool:
        return 0 <= x < width and 0 <= y < len(walkable) // width and bool(walkable[x + y * width]) \
            and (x, y) != blocked

    distance: dict[tuple[int, int, int], int] = {}
    queue: deque[tuple[int, int, int]] = deque()
    for direction in range(4):
        distance[(*target, direction)] = 0
        queue.append((*target, direction))
    while queue:  # backwards search: which states lead into this one in one step?
        x, y, direction = queue.popleft()
        dx, dy = (int(value) for value in DIR_TO_VEC[direction])
        previous = [(x, y, (direction + 1) % 4), (x, y, (direction - 1) % 4)]  # turned left/right
        if free(x - dx, y - dy):
            previous.append((x - dx, y - dy, direction))  # moved forward
        for state in previous:
            if state not in distance:
                distance[state] = distance[(x, y, direction)] + 1
                queue.append(state)
    return distance


def planner_action(env: Any, target: tuple[int, int]) -> int:
    """The first action of a shortest path from the agent's state to the cell ``target``."""
    base = env.unwrapped
    width, height = base.grid.width, base.grid.height
    walkable = bytes(
        1 if (cell := base.grid.get(x, y)) is None or cell.can_overlap() else 0
        for y in range(height) for x in range(width)
    )
    other = tuple(base.failure_pos) if tuple(target) == tuple(base.success_pos) else tuple(base.success_pos)
    table = _distance_table(walkable, width, tuple(target), other)
    x, y, direction = int(base.agent_pos[0]), int(base.agent_pos[1]), int(base.agent_dir)
    dx, dy = (int(value) for value in DIR_TO_VEC[direction])
    front = (x + dx, y + dy)
    candidates = [(LEFT, (x, y, (direction - 1) % 4)), (RIGHT, (x, y, (direction + 1) % 4))]
    if walkable[front[0] + front[1] * width] and front != other:
        candidates.insert(0, (FORWARD, (*front, direction)))
    unreachable = 10 * width * height
    return min(candidates, key=lambda item: table.get(item[1], unreachable))[0]


@dataclass
class Demonstrations:
    """All demonstration steps, flat: row ``i`` is one decision (observation, action taken).

    Episode ``e`` occupies rows ``episode_starts[e] : episode_starts[e] + episode_lengths[e]``.
    ``returns_to_go[i]`` is the reward still to come from step ``i`` on (the episode's return,
    since MiniGrid only rewards the last step); ``timesteps[i]`` counts steps since reset.
    """

    images: UInt8[Tensor, "step 7 7 3"]
    actions: Int[Tensor, "step"]
    returns_to_go: Float[Tensor, "step"]
    timesteps: Int[Tensor, "step"]
    episode_starts: Int[Tensor, "episode"]
    episode_lengths: Int[Tensor, "episode"]
    episode_returns: Float[Tensor, "episode"]
    episode_kinds: Int[Tensor, "episode"]  # index into EPISODE_KINDS
    configurations: Int[Tensor, "episode"]  # index into env.CONFIGURATIONS
    outcomes: Int[Tensor, "episode"]  # index into OUTCOMES

    @property
    def n_episodes(self) -> int:
        return int(self.episode_starts.shape[0])

    def to(self, device: str | torch.device) -> "Demonstrations":
        return Demonstrations(**{field.name: getattr(self, field.name).to(device) for field in fields(self)})

    def state_dict(self) -> dict[str, Tensor]:
        return {field.name: getattr(self, field.name) for field in fields(self)}

    def n_windows(self, context: int) -> Int[Tensor, "episode"]:
        """How many ``context``-step windows each episode has (episodes shorter than it have one)."""
        return (self.episode_lengths - context).clamp(min=0) + 1

    def sample_windows(
        self, batch_size: int, context: int, generator: torch.Generator | None = None
    ) -> tuple[Int[Tensor, "batch"], Int[Tensor, "batch"]]:
        """Random ``(episode, offset)`` pairs: an episode uniformly, then one of its windows uniformly.

        Sampling episodes first keeps the short, optimal episodes as frequent as the long noisy ones.
        """
        device = self.episode_starts.device
        episode = torch.randint(self.n_episodes, (batch_size,), device=device, generator=generator)
        unit = torch.rand(batch_size, device=device, generator=generator)
        offset = (unit * self.n_windows(context)[episode]).long()
        return episode, offset

    def windows(
        self, episode: Int[Tensor, "batch"], offset: Int[Tensor, "batch"], context: int
    ) -> tuple[
        Float[Tensor, "batch timestep feature"],
        Int[Tensor, "batch timestep"],
        Float[Tensor, "batch timestep"],
        Int[Tensor, "batch timestep"],
        Bool[Tensor, "batch timestep"],
    ]:
        """Steps ``offset .. offset + context - 1`` of each episode, as model inputs.

        Returns ``(states, actions, returns_to_go, timesteps, mask)``. ``actions[:, t]`` is the
        action taken at step ``t`` (the label of state token ``t``; the model reads
        ``actions[:, :-1]`` as input). Windows running past an episode's end repeat its last step,
        and ``mask`` is False there: causal attention means those positions never influence the
        real ones, and the loss ignores them.
        """
        steps = torch.arange(context, device=episode.device)
        length = (self.episode_lengths[episode] - offset).clamp(max=context)
        mask = steps[None, :] < length[:, None]
        rows = self.episode_starts[episode][:, None] + offset[:, None] + torch.minimum(
            steps[None, :], (length - 1)[:, None]
        )
        states = one_hot_views(self.images[rows])
        return states, self.actions[rows], self.returns_to_go[rows], self.timesteps[rows], mask

    def summary(self) -> dict[str, Any]:
        """Counts by kind and outcome and a histogram of returns (for printing and tests)."""
        returns = self.episode_returns.cpu()
        edges = [0.0, 1e-9, 0.2, 0.4, 0.6, 0.8, 0.88, 0.9]
        histogram = {
            f"[{low:.2f}, {high:.2f})": int(((returns >= low) & (returns < high)).sum())
            for low, high in zip(edges[:-1], edges[1:])
        }
        return {
            "episodes": self.n_episodes,
            "steps": int(self.actions.shape[0]),
            "kinds": {name: int((self.episode_kinds == i).sum()) for i, name in enumerate(EPISODE_KINDS)},
            "outcomes": {name: int((self.outcomes == i).sum()) for i, name in enumerate(OUTCOMES)},
            "return_histogram": histogram,
            "mean_return": float(returns.mean()),
        }


def make_demonstrations(
    n_episodes: int = DEFAULT_DATA_CONFIG["n_episodes"],
    seed: int = DEFAULT_DATA_CONFIG["seed"],
    kind_weights: dict[str, float] | None = None,
    noisy_epsilon: tuple[float, float] | list[float] = tuple(DEFAULT_DATA_CONFIG["noisy_epsilon"]),
    wrong_epsilon: tuple[float, float] | list[float] = tuple(DEFAULT_DATA_CONFIG["wrong_epsilon"]),
) -> Demonstrations:
    """Play ``n_episodes`` scripted episodes; the result depends only on the arguments."""
    if n_episodes < 1:
        raise ValueError(f"n_episodes must be at least 1, got {n_episodes}")
    weights = dict(DEFAULT_DATA_CONFIG["kind_weights"] if kind_weights is None else kind_weights)
    if set(weights) - set(EPISODE_KINDS) or any(value < 0 for value in weights.values()) \
            or sum(weights.values()) <= 0:
        raise ValueError(f"kind_weights must map some of {EPISODE_KINDS} to non-negative weights, got {weights}")
    probabilities = np.array([weights.get(kind, 0.0) for kind in EPISODE_KINDS], dtype=float)
    probabilities /= probabilities.sum()

    rng = np.random.default_rng(seed)
    env = make_env()
    images: list[np.ndarray] = []
    actions: list[int] = []
    rewards: list[float] = []
    lengths, kinds, configurations, outcomes = [], [], [], []
    for _ in range(n_episodes):
        kind = int(rng.choice(len(EPISODE_KINDS), p=probabilities))
        epsilon = {
            "optimal": 0.0,
            "noisy": rng.uniform(*noisy_epsilon),
            "wrong": rng.uniform(*wrong_epsilon),
            "random": 1.0,
        }[EPISODE_KINDS[kind]]
        observation, info = env.reset(seed=int(rng.integers(2**31)))
        base = env.unwrapped
        target = tuple(base.failure_pos if EPISODE_KINDS[kind] == "wrong" else base.success_pos)
        length, finished = 0, "timeout"
        while True:
            if epsilon > 0 and rng.random() < epsilon:
                action = int(rng.integers(N_ACTIONS))
            else:
                action = planner_action(env, target)
            images.append(observation["image"])
            actions.append(action)
            observation, reward, terminated, truncated, _ = env.step(action)
            rewards.append(float(reward))
            length += 1
            if terminated or truncated:
                where = outcome(env)
                finished = where if where != "neither" else "timeout"
                break
        lengths.append(length)
        kinds.append(kind)
        configurations.append(info["configuration"])
        outcomes.append(OUTCOMES.index(finished))
    env.close()

    lengths_tensor = torch.tensor(lengths, dtype=torch.long)
    starts = torch.cumsum(lengths_tensor, 0) - lengths_tensor
    episode_index = torch.repeat_interleave(torch.arange(n_episodes), lengths_tensor)
    timesteps = torch.arange(len(actions)) - starts[episode_index]
    # Return-to-go: the rewards from this step to the episode's end, summed backwards per episode.
    returns_to_go = np.zeros(len(rewards))
    for start, length in zip(starts.tolist(), lengths):
        returns_to_go[start:start + length] = np.cumsum(rewards[start:start + length][::-1])[::-1]
    episode_returns = torch.tensor(returns_to_go[starts.numpy()], dtype=torch.float32)
    return Demonstrations(
        images=torch.from_numpy(np.stack(images).astype(np.uint8)),
        actions=torch.tensor(actions, dtype=torch.long),
        returns_to_go=torch.tensor(returns_to_go, dtype=torch.float32),
        timesteps=timesteps,
        episode_starts=starts,
        episode_lengths=lengths_tensor,
        episode_returns=episode_returns,
        episode_kinds=torch.tensor(kinds, dtype=torch.long),
        configurations=torch.tensor(configurations, dtype=torch.long),
        outcomes=torch.tensor(outcomes, dtype=torch.long),
    )


def load_demonstrations(path: str) -> Demonstrations:
    """Read a file written by ``python -m utils.memory_dt make-data``."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    return Demonstrations(**state)

