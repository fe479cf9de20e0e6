"""Plumbing for the causal notebook 2.2 that is not the lesson: episodes under hooks, reference sets.

The interventions themselves are :mod:`utils.causal`'s (component names, reference caches,
zero/mean/resample values, patching hooks); this module adapts them to a *policy*, whose context
grows from 2 tokens (step 0) to 26 (step 8 and later):

- :func:`causal_name`: ``"L0H1"`` (the chapter's head names) to ``"0.1"`` (:mod:`utils.causal`'s);
- :func:`on_path_windows`, :func:`on_policy_windows`, :func:`reference_windows` /
  :func:`reference_caches`: reference sets for ablation, one batch of contexts per context length
  (a per-position mean only makes sense between contexts of the same length): the four
  configurations' own greedy contexts (on-path), every context of a set of played episodes
  (on-policy, broader), or demonstration windows (the training distribution);
- :func:`episode_ablation_hooks`: hooks that pick, at every forward pass, the reference values of
  the current context length, so they can stay on for a whole episode;
- :func:`play_configurations` / :func:`episode_success`: greedy closed-loop play of the four
  configurations in the real environment with hooks on;
- :func:`decision_inputs` and :func:`turn_logit_difference`: the decision step's inputs and the
  metric (correct-turn logit minus wrong-turn logit) for single-forward-pass experiments.
"""

from __future__ import annotations

import re
from typing import Any, Callable, Iterable, Sequence

import torch
from jaxtyping import Float
from torch import Tensor
from transformer_lens import ActivationCache

from utils import causal
from utils.memory_dt.data import make_demonstrations
from utils.memory_dt.behaviour import Played
from utils.memory_dt.env import ACTION_NAMES, BEST_RETURN, CONFIGURATIONS, SIDES, encode_observation, make_env, outcome
from utils.memory_dt.model import DecisionTransformer, n_tokens
from utils.memory_dt.policy import DecisionTransformerPolicy, play_episode

Inputs = tuple[Tensor, Tensor, Tensor, Tensor]
LEFT, RIGHT = ACTION_NAMES.index("left"), ACTION_NAMES.index("right")
_HEAD = re.compile(r"^L(\d+)H(\d+)$")


def causal_name(name: str) -> str:
    """The :mod:`utils.causal` name of a component: ``"L0H1"`` becomes ``"0.1"``; ``"MLP 2"``,
    ``"N2.199"`` and ``"0.1"`` stay as they are."""
    if not isinstance(name, str):
        raise ValueError(f"a component name is a string such as 'L0H1' or 'MLP 2', got {type(name).__name__}")
    match = _HEAD.match(name)
    return f"{match[1]}.{match[2]}" if match else name


def correct_turn(configuration: int) -> int:
    """The action that wins ``configuration``: facing right at the junction, left is up (the top)."""
    if not 0 <= int(configuration) < len(CONFIGURATIONS):
        raise ValueError(f"configuration must lie in 0..{len(CONFIGURATIONS) - 1}, got {configuration!r}")
    return LEFT if SIDES[int(configuration) % 2] == "top" else RIGHT


# ----------------------------------------------------------------------------------------------
# Reference sets, one per context length


def reference_windows(n_episodes: int = 400, seed: int = 11) -> dict[int, Inputs]:
    """Demonstration contexts (the training distribution) grouped by context length ``1 .. 9``.

    Length ``T < 9``: the first ``T`` steps of every demonstration episode at least ``T`` steps
    long (what the policy sees at step ``T - 1``). Length 9: one random 9-step window of every
    episode at least 9 steps long. The episodes are :func:`make_demonstrations` ``(n_episodes, seed)``.
    """
    if not isinstance(n_episodes, int) or n_episodes < 10:
        raise ValueError(f"n_episodes must be an int of at least 10, got {n_episodes!r}")
    demonstrations = make_demonstrations(n_episodes, seed=seed)
    generator = torch.Generator().manual_seed(seed)
    windows: dict[int, Inputs] = {}
    for length in range(1, 10):
        episodes = torch.nonzero(demonstrations.episode_lengths >= length).flatten()
        if length < 9:
            offsets = torch.zeros_like(episodes)
        else:
            spare = demonstrations.episode_lengths[episodes] - length + 1
            offsets = (torch.rand(len(episodes), generator=generator) * spare).long()
        states, actions, returns, timesteps, _ = demonstrations.windows(episodes, offsets, length)
        windows[length] = (states, actions[:, :-1], returns, timesteps)
    return windows


@torch.no_grad()
def on_path_windows(model: DecisionTransformer, demonstrations: dict[int, Inputs] | None = None,
                    target_return: float = BEST_RETURN) -> dict[int, Inputs]:
    """The *on-path* reference set: for every context length the greedy episode reaches, the four
    configurations' own contexts at that step (so a mean over it keeps what the four share, the
    walk, and removes what tells them apart). Longer contexts, reached only by an agent that
    leaves the shortest path, come from ``demonstrations`` (default :func:`reference_windows`)."""
    windows = dict(reference_windows() if demonstrations is None else demonstrations)
    episodes = [play_episode(model, target_return, configuration=index) for index in range(len(CONFIGURATIONS))]
    shortest = min(len(episode.actions) for episode in episodes)
    for length in range(1, min(shortest, model.context_timesteps) + 1):
        contexts = [episode.context(length - 1, model.context_timesteps) for episode in episodes]
        windows[length] = tuple(torch.cat([context[part] for context in contexts]) for part in range(4))  # type: ignore[assignment]
    return windows


@torch.no_grad()
def on_policy_windows(played: Sequence[Played], context_timesteps: int = 9) -> dict[int, Inputs]:
    """Every context the policy saw in ``played`` (episodes from :func:`utils.memory_dt.behaviour.play`),
    grouped by context length ``1 .. context_timesteps``: a broader reference set than
    :func:`on_path_windows` (other target returns, forced prefixes, dawdling).

    Each episode is replayed in its configuration (the environment is deterministic) to recover
    its views; the return-to-go starts at the episode's target and drops by each reward. Length
    ``T < context_timesteps``: the first ``T`` steps (what the policy saw at step ``T - 1``); the
    full length: every window of that many consecutive steps.
    """
    if not played or not all(isinstance(episode, Played) for episode in played):
        raise ValueError("played must be a non-empty list of behaviour.Played episodes (from behaviour.play)")
    grouped: dict[int, list[Inputs]] = {}
    for episode in played:
        env = make_env()
        observation, _ = env.reset(options={"configuration": episode.configuration})
        images, rewards = [], []
        for action in episode.actions.tolist():
            images.append(encode_observation(observation))
            observation, reward, _, _, _ = env.step(action)
            rewards.append(float(reward))
        env.close()
        states = torch.stack(images)
        returns = episode.target_return - torch.tensor([0.0] + rewards[:-1]).cumsum(0)
        steps = torch.arange(len(images))
        for last in range(len(images)):
            first = max(0, last + 1 - context_timesteps)
            grouped.setdefault(last + 1 - first, []).append((
                states[first:last + 1][None], episode.actions[first:last][None],
                returns[first:last + 1][None].float(), steps[first:last + 1][None]))
    return {length: tuple(torch.cat([context[part] for context in contexts]) for part in range(4))  # type: ignore[misc]
            for length, contexts in sorted(grouped.items())}


@torch.no_grad()
def reference_caches(
    model: DecisionTransformer, names: Iterable[str], windows: dict[int, Inputs]
) -> dict[int, ActivationCache]:
    """:func:`utils.causal.reference_cache` of the components ``names`` for every context length."""
    names = [causal_name(name) for name in names]
    return {length: causal.reference_cache(model, inputs, names) for length, inputs in windows.items()}


def episode_ablation_hooks(
    model: DecisionTransformer,
    ablated: Iterable[str],
    references: dict[int, ActivationCache],
    batch_size: int,
    kind: causal.AblationKind = "mean",
    seed: int = 0,
) -> list[causal.Hook]:
    """Hooks that ablate ``ablated`` (``"L0H1"``, ``"MLP 2"``, ...) at every context length.

    Each hook looks at how many tokens the forward pass has and applies
    :func:`utils.causal.ablation_hooks` built from ``references`` of that context length
    (``"mean"``: per-position mean over that length's reference windows; ``"resample"``: the
    same reference window for every ablated component, drawn from ``seed``).
    """
    ablated = [causal_name(name) for name in ablated]
    if kind not in causal.ABLATION_KINDS:
        raise ValueError(f"ablation kind must be one of {causal.ABLATION_KINDS}, got {kind!r}")
    if not ablated:
        return []
    by_tokens: dict[int, dict[str, Callable[..., Tensor]]] = {}
    for length, reference in references.items():
        hooks = causal.ablation_hooks(model, ablated, reference, batch_size, kind, True, seed)
        by_tokens[n_tokens(length)] = dict(hooks)
    hook_names = sorted({item.hook_name for item in causal.components(model, ablated)})

    def dispatch(activation: Tensor, hook: Any) -> Tensor:
        tokens = activation.shape[1]
        if tokens not in by_tokens:
            raise ValueError(f"no reference set for a context of {tokens} tokens; build references for every length 1..9")
        return by_tokens[tokens][hook.name](activation, hook)

    return [(name, dispatch) for name in hook_names]


# ----------------------------------------------------------------------------------------------
# Episodes with hooks on


@torch.no_grad()
def play_configurations(
    model: DecisionTransformer,
    hooks: Sequence[causal.Hook] = (),
    configurations: Sequence[int] = (0, 1, 2, 3),
    target_return: float = BEST_RETURN,
) -> list[dict[str, Any]]:
    """Greedy closed-loop play of ``configurations`` in the real environment, in lock-step, with
    ``hooks`` on during every forward pass. Hooks built for a batch must be built for
    ``len(configurations)`` episodes.

    Returns one dict per configuration: ``outcome`` (``"success"``, ``"wrong_object"`` or
    ``"timeout"``), ``actions`` (list of ints) and ``length``.
    """
    configurations = list(configurations)
    bad = [value for value in configurations if not (isinstance(value, int) and 0 <= value < len(CONFIGURATIONS))]
    if not configurations or bad:
        raise ValueError(f"configurations must be ints in 0..{len(CONFIGURATIONS) - 1}, got {configurations!r}")
    if not isinstance(model, DecisionTransformer):
        raise ValueError(f"model must be a DecisionTransformer (utils.load_model('memory_dt')), got {type(model).__name__}")
    was_training = model.training
    model.eval()
    envs = [make_env() for _ in configurations]
    observations = [env.reset(options={"configuration": index})[0] for env, index in zip(envs, configurations)]
    policy = DecisionTransformerPolicy(model, target_return)
    policy.reset(len(envs))
    rewards = [0.0] * len(envs)
    results: list[dict[str, Any] | None] = [None] * len(envs)
    actions: list[list[int]] = [[] for _ in envs]
    try:
        with model.hooks(fwd_hooks=list(hooks)):
            while any(result is None for result in results):
                chosen = policy.act_batch(observations, rewards)
                for index, env in enumerate(envs):
                    if results[index] is not None:
                        continue
                    actions[index].append(chosen[index])
                    observations[index], rewards[index], terminated, truncated, _ = env.step(chosen[index])
                    if terminated or truncated:
                        where = outcome(env)
                        results[index] = {"outcome": where if where != "neither" else "timeout",
                                          "actions": actions[index], "length": len(actions[index])}
    finally:
        for env in envs:
            env.close()
        model.train(was_training)
    return results  # type: ignore[return-value]


def episode_success(
    model: DecisionTransformer,
    hooks: Sequence[causal.Hook] = (),
    configurations: Sequence[int] = (0, 1, 2, 3),
    target_return: float = BEST_RETURN,
) -> list[bool]:
    """For each configuration: does greedy play with ``hooks`` on reach the matching object?"""
    return [result["outcome"] == "success" for result in play_configurations(model, hooks, configurations, target_return)]


def ablated_success(
    model: DecisionTransformer,
    ablated: Iterable[str],
    references: dict[int, ActivationCache],
    kind: causal.AblationKind = "mean",
    seed: int = 0,
) -> list[bool]:
    """:func:`episode_success` in all four configurations with ``ablated`` ablated for whole episodes."""
    hooks = episode_ablation_hooks(model, ablated, references, len(CONFIGURATIONS), kind, seed)
    return episode_success(model, hooks)


# ----------------------------------------------------------------------------------------------
# The decision step


@torch.no_grad()
def decision_inputs(model: DecisionTransformer, target_return: float = BEST_RETURN) -> tuple[Inputs, list[int]]:
    """The four configurations' contexts at their decision step (the first turn of greedy play),
    stacked into one batch, and that step for each. Raises if the steps differ (they are all 4
    on the shipped model; the contexts must have one length to be batched)."""
    episodes = [play_episode(model, target_return, configuration=index) for index in range(len(CONFIGURATIONS))]
    steps = []
    for episode in episodes:
        turns = torch.nonzero((episode.actions == LEFT) | (episode.actions == RIGHT)).flatten()
        if len(turns) == 0:
            raise ValueError("an episode never turns; this model has no decision step to study")
        steps.append(int(turns[0]))
    if len(set(steps)) != 1:
        raise ValueError(f"the decision steps differ between configurations ({steps}); batch them one at a time")
    contexts = [episode.context(step) for episode, step in zip(episodes, steps)]
    inputs = tuple(torch.cat([context[part] for context in contexts]) for part in range(4))
    return inputs, steps  # type: ignore[return-value]


def turn_logit_difference(
    logits: Float[Tensor, "batch timestep action"], configurations: Sequence[int] = (0, 1, 2, 3)
) -> Float[Tensor, "batch"]:
    """Correct-turn logit minus wrong-turn logit at the last step, one value per configuration."""
    if logits.ndim != 3 or len(logits) != len(configurations):
        raise ValueError(f"logits must be [batch, timestep, action] with one row per configuration, got {tuple(logits.shape)}")
    correct = torch.tensor([correct_turn(index) for index in configurations])
    wrong = LEFT + RIGHT - correct
    last = logits[:, -1]
    rows = torch.arange(len(last))
    return last[rows, correct] - last[rows, wrong]
