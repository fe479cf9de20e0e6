"""Playing the environment with a trained decision transformer.

:class:`DecisionTransformerPolicy` keeps the model's context window itself: the last 9 states,
returns-to-go and timesteps and the 8 actions between them. Use it like any agent::

    policy = DecisionTransformerPolicy(model, target_return=0.892)
    observation, info = env.reset(seed=0)
    policy.reset()
    reward = 0.0
    while True:
        action = policy.act(observation, reward)  # reward: what the last env.step returned
        observation, reward, terminated, truncated, info = env.step(action)
        if terminated or truncated:
            break

The return-to-go starts at ``target_return`` and drops by each reward passed in (in this task
only the last step is rewarded, so it stays at the target). Actions are greedy (argmax).
The policy assumes the action it returned is the one taken. ``act_batch`` plays many episodes in
lock-step with one forward pass per step; :func:`evaluate` uses it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor

from utils.memory_dt.env import CONFIGURATIONS, encode_observation, make_env, outcome
from utils.memory_dt.model import DecisionTransformer


class DecisionTransformerPolicy:
    """Greedy, return-conditioned actions from a :class:`DecisionTransformer`.

    Args:
        model: the decision transformer (its device is used for the context tensors).
        target_return: the return asked for at the first step (0.892 is the best possible).
    """

    def __init__(self, model: DecisionTransformer, target_return: float) -> None:
        if not isinstance(model, DecisionTransformer):
            raise ValueError(
                f"model must be a DecisionTransformer (utils.load_model('memory_dt')), got "
                f"{type(model).__name__}"
            )
        if isinstance(target_return, bool) or not isinstance(target_return, (int, float)) \
                or not math.isfinite(target_return):
            raise ValueError(f"target_return must be a finite number, got {target_return!r}")
        self.model = model
        self.target_return = float(target_return)
        self.context_timesteps = model.context_timesteps
        self.reset()

    def reset(self, n_episodes: int = 1) -> None:
        """Start ``n_episodes`` new episodes (1 for :meth:`act`, more for :meth:`act_batch`)."""
        if not isinstance(n_episodes, int) or n_episodes < 1:
            raise ValueError(f"n_episodes must be a positive int, got {n_episodes!r}")
        device = next(self.model.parameters()).device
        self.n_episodes = n_episodes
        self.step = 0  # decisions made since reset; the timestep of the next state
        self.states: Float[Tensor, "episode timestep feature"] = torch.zeros(
            n_episodes, 0, self.model.n_features, device=device)
        self.actions: Int[Tensor, "episode timestep_minus_1"] = torch.zeros(
            n_episodes, 0, dtype=torch.long, device=device)
        self.returns_to_go: Float[Tensor, "episode timestep"] = torch.zeros(n_episodes, 0, device=device)
        self.timesteps: Int[Tensor, "episode timestep"] = torch.zeros(
            n_episodes, 0, dtype=torch.long, device=device)
        self._last_actions: Int[Tensor, "episode"] | None = None

    def act(self, observation: dict[str, Any], reward: float = 0.0) -> int:
        """The action for ``observation``; ``reward`` is what the previous ``env.step`` returned."""
        if self.n_episodes != 1:
            raise ValueError(
                f"act() plays one episode but reset() started {self.n_episodes}; use act_batch()"
            )
        return self.act_batch([observation], [reward])[0]

    def _check_rewards(self, rewards: Sequence[float] | None) -> Tensor:
        """The rewards as a float tensor, one per episode; a NaN, an infinity or a non-number is
        refused (it would turn every later return-to-go into NaN and the action into 0)."""
        if rewards is None:
            return torch.zeros(self.n_episodes)
        if isinstance(rewards, (str, bytes)) or not hasattr(rewards, "__len__"):
            raise ValueError(f"rewards must be a list of numbers, one per episode, got {rewards!r}")
        if len(rewards) != self.n_episodes:
            raise ValueError(f"Got {len(rewards)} rewards for {self.n_episodes} episodes; pass one per episode")
        values = []
        for reward in rewards:
            if isinstance(reward, Tensor) and reward.numel() == 1:
                reward = reward.item()
            if isinstance(reward, (bool, np.bool_)) or not isinstance(reward, (int, float, np.integer, np.floating)):
                raise ValueError(f"reward must be a number (what env.step returned), got {reward!r}")
            if not math.isfinite(float(reward)):
                raise ValueError(
                    f"reward must be finite, got {float(reward)}; pass the reward env.step returned (0.0 before the first step)"
                )
            values.append(float(reward))
        return torch.tensor(values)

    @torch.no_grad()
    def act_batch(
        self, observations: Sequence[dict[str, Any]], rewards: Sequence[float] | None = None
    ) -> list[int]:
        """One action per parallel episode; ``rewards[i]`` came with ``observations[i]``."""
        if len(observations) != self.n_episodes:
            raise ValueError(
                f"Got {len(observations)} observations for {self.n_episodes} episodes; call "
                f"reset(n_episodes={len(observations)}) first"
            )
        if self.step >= self.model.max_timestep:
            raise ValueError(
                f"The policy has acted {self.step} times since reset(); the model knows timesteps "
                f"0..{self.model.max_timestep - 1}. Call reset() at the start of every episode"
            )
        for observation in observations:
            if not isinstance(observation, dict) or "image" not in observation:
                raise ValueError(
                    "Each observation must be the environment's observation dict (with an 'image' "
                    f"of shape (7, 7, 3)), got {type(observation).__name__}"
                )
            if np.shape(observation["image"]) != (7, 7, 3):
                raise ValueError(
                    f"Observation image has shape {np.shape(observation['image'])}; expected (7, 7, 3), "
                    "the environment's 7x7 view"
                )
        received = self._check_rewards(rewards)
        device = self.states.device
        states = encode_observation(np.stack([observation["image"] for observation in observations]))
        if self.step == 0:
            returns = torch.full((self.n_episodes,), self.target_return, device=device)
        else:
            returns = self.returns_to_go[:, -1] - received.to(device)
            if not bool(torch.isfinite(returns).all()):
                raise ValueError(
                    f"rewards {received.tolist()} make the return-to-go overflow float32; pass the rewards "
                    "env.step returned (between 0 and 1 in this task)"
                )
            self.actions = torch.cat([self.actions, self._last_actions[:, None]], dim=1)
        keep = self.context_timesteps
        self.states = torch.cat([self.states, states.to(device)[:, None]], dim=1)[:, -keep:]
        self.returns_to_go = torch.cat([self.returns_to_go, returns[:, None]], dim=1)[:, -keep:]
        self.timesteps = torch.cat(
            [self.timesteps, torch.full((self.n_episodes, 1), self.step, device=device)], dim=1
        )[:, -keep:]
        self.actions = self.actions[:, -(keep - 1):] if keep > 1 else self.actions[:, :0]
        logits = self.model(self.states, self.actions, self.returns_to_go, self.timesteps)[:, -1]
        self._last_actions = logits.argmax(-1)
        self.step += 1
        return self._last_actions.tolist()


@torch.no_grad()
def evaluate(
    model: DecisionTransformer, target_return: float, episodes: int = 500, seed: int = 0,
    batch_size: int = 500,
) -> dict[str, Any]:
    """Play ``episodes`` greedy episodes (env seeds ``seed .. seed + episodes - 1``), in batches.

    Returns ``success_rate`` (reached the matching object), ``wrong_object_rate`` (reached the
    other one), ``timeout_rate``, ``mean_return``, ``mean_length`` and, per configuration,
    ``success_rate_by_configuration`` and ``episodes_by_configuration``.
    """
    if episodes < 1 or batch_size < 1:
        raise ValueError(f"episodes and batch_size must be positive, got {episodes} and {batch_size}")
    was_training = model.training
    model.eval()
    policy = DecisionTransformerPolicy(model, target_return)
    results: list[tuple[int, str, float, int]] = []  # configuration, outcome, return, length
    for first in range(0, episodes, batch_size):
        count = min(batch_size, episodes - first)
        envs = [make_env() for _ in range(count)]
        resets = [env.reset(seed=seed + first + index) for index, env in enumerate(envs)]
        observations = [observation for observation, _ in resets]
        configurations = [info["configuration"] for _, info in resets]
        rewards = [0.0] * count
        returns = [0.0] * count
        lengths = [0] * count
        outcomes: list[str | None] = [None] * count
        policy.reset(count)
        while any(result is None for result in outcomes):
            actions = policy.act_batch(observations, rewards)
            for index, env in enumerate(envs):
                if outcomes[index] is not None:
                    continue  # finished: its row keeps being fed its last observation, unused
                observations[index], rewards[index], terminated, truncated, _ = env.step(actions[index])
                returns[index] += float(rewards[index])
                lengths[index] += 1
                if terminated or truncated:
                    where = outcome(env)
                    outcomes[index] = where if where != "neither" else "timeout"
        for env in envs:
            env.close()
        results.extend(zip(configurations, outcomes, returns, lengths))  # type: ignore[arg-type]
    model.train(was_training)

    def rate(values: list[bool]) -> float:
        return float(np.mean(values)) if values else float("nan")

    by_configuration = {
        name: [result for result in results if result[0] == index]
        for index, name in enumerate(CONFIGURATIONS)
    }
    return {
        "target_return": float(target_return),
        "episodes": episodes,
        "success_rate": rate([result[1] == "success" for result in results]),
        "wrong_object_rate": rate([result[1] == "wrong_object" for result in results]),
        "timeout_rate": rate([result[1] == "timeout" for result in results]),
        "mean_return": float(np.mean([result[2] for result in results])),
        "mean_length": float(np.mean([result[3] for result in results])),
        "success_rate_by_configuration": {
            name: rate([result[1] == "success" for result in group])
            for name, group in by_configuration.items()
        },
        "episodes_by_configuration": {name: len(group) for name, group in by_configuration.items()},
    }


@dataclass
class Episode:
    """One played episode: what the policy saw and did at each of its ``T`` decisions."""

    configuration: int  # index into env.CONFIGURATIONS
    outcome: str  # "success", "wrong_object" or "timeout"
    images: Int[Tensor, "step 7 7 3"]  # the raw views the policy acted on
    actions: Int[Tensor, "step"]
    rewards: Float[Tensor, "step"]  # reward returned by the env after each action
    returns_to_go: Float[Tensor, "step"]  # as fed to the model
    timesteps: Int[Tensor, "step"]

    @property
    def total_return(self) -> float:
        return float(self.rewards.sum())

    def context(self, step: int, context_timesteps: int = 9) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Model inputs (batch of one) for the decision at ``step``: the window the policy used."""
        if not 0 <= step < len(self.actions):
            raise ValueError(f"step must lie in 0..{len(self.actions) - 1}, got {step}")
        first = max(0, step + 1 - context_timesteps)
        window = slice(first, step + 1)
        return (
            encode_observation(self.images[window])[None],
            self.actions[first:step][None],
            self.returns_to_go[window][None],
            self.timesteps[window][None],
        )


@torch.no_grad()
def play_episode(
    model: DecisionTransformer, target_return: float, configuration: int | None = None,
    seed: int | None = None,
) -> Episode:
    """Play one greedy episode, in ``configuration`` (0..3) if given, else the one ``seed`` draws."""
    env = make_env()
    options = None if configuration is None else {"configuration": configuration}
    observation, info = env.reset(seed=seed, options=options)
    policy = DecisionTransformerPolicy(model, target_return)
    images, actions, rewards, returns, timesteps = [], [], [], [], []
    reward = 0.0
    while True:
        action = policy.act(observation, reward)
        images.append(observation["image"])
        returns.append(float(policy.returns_to_go[0, -1]))
        timesteps.append(policy.step - 1)
        actions.append(action)
        observation, reward, terminated, truncated, _ = env.step(action)
        rewards.append(float(reward))
        if terminated or truncated:
            break
    where = outcome(env)
    env.close()
    return Episode(
        configuration=info["configuration"],
        outcome=where if where != "neither" else "timeout",
        images=torch.from_numpy(np.stack(images).astype(np.uint8)),
        actions=torch.tensor(actions, dtype=torch.long),
        rewards=torch.tensor(rewards, dtype=torch.float32),
        returns_to_go=torch.tensor(returns, dtype=torch.float32),
        timesteps=torch.tensor(timesteps, dtype=torch.long),
    )
