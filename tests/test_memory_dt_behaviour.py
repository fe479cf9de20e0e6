"""Chapter 2 helpers beside the lesson: forced-prefix play (utils.memory_dt.behaviour) and the
random-direction baseline of an OV circuit (utils.memory_dt.analysis.gain_against_random_directions)."""

from __future__ import annotations

import math

import pytest
import torch

from utils import load_model
from utils.memory_dt import analysis, behaviour
from utils.memory_dt.env import ACTION_NAMES, BEST_RETURN, CONFIGURATIONS
from utils.memory_dt.policy import play_episode

FORWARD, DONE = ACTION_NAMES.index("forward"), ACTION_NAMES.index("done")


@pytest.fixture(scope="module")
def model():
    torch.set_num_threads(1)
    return load_model("memory_dt", device="cpu")


def test_play_without_a_prefix_is_the_policy_wrapper(model):
    played = behaviour.play(model, list(range(4)), [BEST_RETURN] * 4)
    for episode in played:
        reference = play_episode(model, BEST_RETURN, configuration=episode.configuration)
        assert episode.actions.tolist() == reference.actions.tolist()
        assert episode.outcome == reference.outcome == "success"
        assert math.isclose(episode.total_return, reference.total_return, abs_tol=1e-6)


def test_a_forced_prefix_is_taken_and_seen_as_the_models_own(model):
    natural = behaviour.play(model, [0], [BEST_RETURN])[0]
    # forcing what the model would do anyway changes nothing
    same = behaviour.play(model, [0], [BEST_RETURN], [natural.actions[:3].tolist()])[0]
    assert same.actions.tolist() == natural.actions.tolist()
    turned = behaviour.play(model, [0], [BEST_RETURN], [[1, 1]])[0]
    assert turned.actions[:2].tolist() == [1, 1] and turned.prefix == (1, 1)
    assert turned.actions.tolist() != natural.actions.tolist()


def test_play_keeps_the_models_window(model, monkeypatch):
    shapes = []
    forward = model.forward

    def spy(states, actions, returns_to_go, timesteps):
        shapes.append((states.shape[1], actions.shape[1], returns_to_go.shape[1], int(timesteps[0, 0]), int(timesteps[0, -1])))
        return forward(states, actions, returns_to_go, timesteps)

    monkeypatch.setattr(model, "forward", spy)
    behaviour.play(model, [0], [BEST_RETURN], [[FORWARD] + [DONE] * 10])
    window = model.context_timesteps
    assert len(shapes) > window
    for step, (n_states, n_actions, n_returns, first, last) in enumerate(shapes):
        assert n_states == n_returns == min(step + 1, window) and n_actions == n_states - 1
        assert last == step and first == max(0, step + 1 - window)


def test_the_instruction_is_lost_when_step_0_leaves_the_window(model):
    for k, expected in ((4, 4), (5, 2)):
        played = behaviour.play(model, list(range(4)), [BEST_RETURN] * 4, [[FORWARD] + [DONE] * k] * 4)
        assert sum(episode.outcome == "success" for episode in played) == expected, k


@pytest.mark.parametrize("arguments, match", [
    (([4], [BEST_RETURN], None), "configuration"),
    (([0, 1], [BEST_RETURN], None), "one length"),
    (([0], [float("nan")], None), "finite"),
    (([0], [BEST_RETURN], [[7]]), "action indices"),
    (([0], [BEST_RETURN], [[2] * 50]), "prefix of 50"),
])
def test_play_rejects_bad_inputs(model, arguments, match):
    with pytest.raises(ValueError, match=match):
        behaviour.play(model, *arguments)
    with pytest.raises(ValueError, match="DecisionTransformer"):
        behaviour.play("model", [0], [BEST_RETURN])


def test_played_names_its_actions_and_first_turn(model):
    episode = behaviour.play(model, [CONFIGURATIONS.index("key-bottom")], [BEST_RETURN])[0]
    assert episode.action_names == ["forward"] * 4 + ["right", "forward"]
    assert episode.first_turn() == "right" and episode.first_turn(after=5) is None and episode.length == 6


def test_gain_against_random_directions_is_one_for_isotropic_and_large_for_rank_one_heads():
    d_model = 64
    isotropic = 3 * torch.eye(d_model)[None]
    ratio, beaten = analysis.gain_against_random_directions(isotropic, torch.randn(d_model), n_random=200)
    assert torch.allclose(ratio, torch.ones(1), atol=1e-5) and beaten.item() == 0.0
    reader = torch.zeros(d_model)
    reader[3] = 1.0
    rank_one = torch.outer(reader, torch.randn(d_model))[None]
    ratio, beaten = analysis.gain_against_random_directions(rank_one, 2 * reader, n_random=200)
    assert ratio.item() > 5 and beaten.item() == 1.0
    orthogonal = torch.zeros(d_model)
    orthogonal[4] = 1.0
    ratio, _ = analysis.gain_against_random_directions(rank_one, orthogonal, n_random=200)
    assert ratio.item() == 0.0


def test_gain_against_random_directions_rejects_bad_inputs():
    with pytest.raises(ValueError, match="flatten"):
        analysis.gain_against_random_directions(torch.zeros(2, 3, 8, 8), torch.ones(8))
    with pytest.raises(ValueError, match="zero vector"):
        analysis.gain_against_random_directions(torch.eye(8)[None], torch.zeros(8))
    with pytest.raises(ValueError, match="n_random"):
        analysis.gain_against_random_directions(torch.eye(8)[None], torch.ones(8), n_random=0)
