"""What the Chapter 2 agent does, measured from outside: greedy play with forced action prefixes.

:func:`play` runs many greedy episodes in lock-step (one forward pass per step for all of them).
Each episode has a configuration, a target return and an optional *forced prefix*: actions the
environment takes whatever the model says, while the model still sees them in its context as
its own past actions. That is how the notebook probes the agent:

- return matching: ask for returns between 0 and the best one and compare what it gets;
- off-path prefixes: push it off the shortest path first and see whether it recovers;
- the memory window: force ``k`` no-op steps so that the first observation (the only one that
  shows the instruction) leaves the model's 9-step context before it reaches the junction.

Nothing here is random: the start is fixed and actions are the argmax, so one configuration,
target and prefix always give the same trajectory.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
from jaxtyping import Int
from torch import Tensor

from utils.memory_dt.env import ACTION_NAMES, CONFIGURATIONS, encode_observation, make_env, outcome
from utils.memory_dt.model import DecisionTransformer


@dataclass
class Played:
    """One episode played by :func:`play`."""

    configuration: int  # index into env.CONFIGURATIONS
    target_return: float  # the return-to-go asked for at step 0
    prefix: tuple[int, ...]  # the forced actions (the environment took these, not the model's)
    actions: Int[Tensor, "step"]  # every action taken, prefix included
    outcome: str  # "success", "wrong_object" or "timeout"
    total_return: float

    @property
    def length(self) -> int:
        return len(self.actions)

    @property
    def action_names(self) -> list[str]:
        return [ACTION_NAMES[int(action)] for action in self.actions]

    def first_turn(self, after: int = 0) -> str | None:
        """The first ``"left"`` or ``"right"`` taken at or after step ``after`` (``None`` if it never turns)."""
        return next((name for name in self.action_names[after:] if name in ("left", "right")), None)


def _check(model: DecisionTransformer, configurations: Sequence[int], target_returns: Sequence[float],
           prefixes: Sequence[Sequence[int]]) -> None:
    if not isinstance(model, DecisionTransformer):
        raise ValueError(f"model must be a DecisionTransformer (utils.load_model('memory_dt')), got {type(model).__name__}")
    if not (len(configurations) == len(target_returns) == len(prefixes)) or len(configurations) == 0:
        raise ValueError(
            f"configurations, target_returns and prefixes must be non-empty and of one length (one entry per "
            f"episode), got {len(configurations)}, {len(target_returns)} and {len(prefixes)}"
        )
    for configuration in configurations:
        if isinstance(configuration, bool) or not isinstance(configuration, int) \
                or not 0 <= configuration < len(CONFIGURATIONS):
            raise ValueError(f"each configuration must be an int in 0..{len(CONFIGURATIONS) - 1}, got {configuration!r}")
    for target in target_returns:
        if isinstance(target, bool) or not isinstance(target, (int, float)) or not math.isfinite(target):
            raise ValueError(f"each target return must be a finite number, got {target!r}")
    for prefix in prefixes:
        if any(isinstance(action, bool) or not isinstance(action, int) or not 0 <= action < len(ACTION_NAMES)
               for action in prefix):
            raise ValueError(f"a prefix must hold action indices in 0..{len(ACTION_NAMES) - 1} "
                             f"({', '.join(ACTION_NAMES)}), got {list(prefix)!r}")
        if len(prefix) >= model.max_timestep:
            raise ValueError(f"a prefix of {len(prefix)} actions leaves the model no step (episodes end at "
                             f"{model.max_timestep}); use fewer than {model.max_timestep}")


@torch.no_grad()
def play(
    model: DecisionTransformer,
    configurations: Sequence[int],
    target_returns: Sequence[float],
    prefixes: Sequence[Sequence[int]] | None = None,
) -> list[Played]:
    """Play one greedy episode per entry (configuration ``i``, asking for ``target_returns[i]``).

    ``prefixes[i]`` (default: none) is forced: for its first ``len(prefixes[i])`` steps the
    environment takes those actions, and the model's context records them as the actions taken.
    The return-to-go drops by each reward, as in :class:`utils.memory_dt.policy.DecisionTransformerPolicy`,
    and the context keeps the last ``model.context_timesteps`` steps.
    """
    prefixes = [tuple(prefix) for prefix in (prefixes if prefixes is not None else [()] * len(configurations))]
    configurations = [int(c) if not isinstance(c, bool) and hasattr(c, "__index__") else c for c in configurations]
    _check(model, configurations, list(target_returns), prefixes)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    count, keep = len(configurations), model.context_timesteps
    envs = [make_env() for _ in range(count)]
    observations = [env.reset(options={"configuration": configuration})[0]
                    for env, configuration in zip(envs, configurations)]
    returns_to_go = torch.tensor([float(target) for target in target_returns])
    states, actions, rtgs, timesteps = [], [], [], []  # per step: [episode, ...]
    taken: list[list[int]] = [[] for _ in range(count)]
    totals = [0.0] * count
    outcomes: list[str | None] = [None] * count
    step = 0
    while any(result is None for result in outcomes) and step < model.max_timestep:
        states.append(encode_observation(torch.stack([torch.as_tensor(o["image"]) for o in observations])))
        rtgs.append(returns_to_go.clone())
        timesteps.append(torch.full((count,), step, dtype=torch.long))
        first = max(0, len(states) - keep)  # the context: the last `keep` states and the actions between them
        past_actions = (torch.stack(actions[first:], 1) if actions[first:]
                        else torch.zeros(count, 0, dtype=torch.long))
        logits = model(torch.stack(states[first:], 1).to(device), past_actions.to(device),
                       torch.stack(rtgs[first:], 1).to(device), torch.stack(timesteps[first:], 1).to(device))[:, -1]
        chosen = logits.argmax(-1).cpu()
        chosen = torch.tensor([prefixes[i][step] if step < len(prefixes[i]) else int(chosen[i]) for i in range(count)])
        actions.append(chosen)
        rewards = torch.zeros(count)
        for index, env in enumerate(envs):
            if outcomes[index] is not None:
                continue  # finished: its row keeps being fed its last observation, unused
            observations[index], reward, terminated, truncated, _ = env.step(int(chosen[index]))
            taken[index].append(int(chosen[index]))
            totals[index] += float(reward)
            rewards[index] = float(reward)
            if terminated or truncated:
                where = outcome(env)
                outcomes[index] = where if where != "neither" else "timeout"
        returns_to_go = returns_to_go - rewards
        step += 1
    for env in envs:
        env.close()
    model.train(was_training)
    return [
        Played(configuration=configurations[i], target_return=float(target_returns[i]), prefix=prefixes[i],
               actions=torch.tensor(taken[i], dtype=torch.long), outcome=outcomes[i] or "timeout",
               total_return=totals[i])
        for i in range(count)
    ]
