"""Chapter 2: the fixed-start memory environment, demonstrations, decision transformer and policy."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import utils
from utils.checkpoints import checkpoint_dir, load_model
from utils.memory_dt import env as memory_env
from utils.memory_dt.data import EPISODE_KINDS, OUTCOMES, make_demonstrations, planner_action
from utils.memory_dt.env import (
    ACTION_NAMES,
    BEST_RETURN,
    CHANNEL_NAMES,
    CONFIGURATIONS,
    ENV_ID,
    FEATURE_NAMES,
    MAX_STEPS,
    encode_observation,
    feature_index,
    make_env,
    outcome,
)
from utils.memory_dt.model import DEFAULT_MODEL_CONFIG, DecisionTransformer, build_model, fold_layer_norm
from utils.memory_dt.policy import DecisionTransformerPolicy, evaluate, play_episode

TRAINED = checkpoint_dir("memory_dt")
needs_trained = pytest.mark.skipif(not TRAINED.exists(),
                                   reason="trained_models/memory_dt is absent")


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread):
    """Every test here runs on one thread (see conftest.py)."""


@pytest.fixture(scope="module")
def model() -> DecisionTransformer:
    torch.manual_seed(0)
    return build_model(DEFAULT_MODEL_CONFIG).eval()


@pytest.fixture(scope="module")
def demonstrations():
    return make_demonstrations(300, seed=11)


def play_scripted(env: gym.Env, target: tuple[int, int]) -> tuple[list[float], bool, bool]:
    rewards, terminated, truncated = [], False, False
    while not (terminated or truncated):
        _, reward, terminated, truncated, _ = env.step(planner_action(env, target))
        rewards.append(float(reward))
    return rewards, terminated, truncated


# --- environment -------------------------------------------------------------------------------

def test_environment_is_registered_with_a_fixed_start_and_all_configurations():
    assert ENV_ID in gym.registry
    env = make_env()
    assert isinstance(env.unwrapped, memory_env.MemoryFixedStartEnv)
    assert env.unwrapped.max_steps == MAX_STEPS == 50
    seen = set()
    for seed in range(40):
        _, info = env.reset(seed=seed)
        assert tuple(env.unwrapped.agent_pos) == (1, 3) and env.unwrapped.agent_dir == 0
        seen.add(info["configuration"])
    assert seen == set(range(4))
    _, first = env.reset(seed=5)
    _, again = env.reset(seed=5)
    assert first == again
    for index, name in enumerate(CONFIGURATIONS):
        _, info = env.reset(seed=123, options={"configuration": index})
        base = env.unwrapped
        instruction, side = name.split("-")
        assert info["configuration"] == index and tuple(base.agent_pos) == (1, 3)
        assert base.grid.get(1, 2).type == instruction
        twin = (5, 1) if side == "top" else (5, 5)
        other = (5, 5) if side == "top" else (5, 1)
        assert base.grid.get(*twin).type == instruction and base.grid.get(*other).type != instruction
        assert tuple(base.success_pos) == ((5, 2) if side == "top" else (5, 4))
    with pytest.raises(ValueError, match="configuration"):
        env.reset(options={"configuration": 4})


def test_reward_formula_on_scripted_episodes():
    env = make_env()
    for index in range(4):
        env.reset(options={"configuration": index})
        rewards, terminated, _ = play_scripted(env, tuple(env.unwrapped.success_pos))
        assert len(rewards) == 6 and terminated and outcome(env) == "success"
        assert rewards[-1] == pytest.approx(1 - 0.9 * 6 / 50) == pytest.approx(BEST_RETURN)
        assert sum(rewards[:-1]) == 0
        env.reset(options={"configuration": index})
        rewards, terminated, _ = play_scripted(env, tuple(env.unwrapped.failure_pos))
        assert terminated and outcome(env) == "wrong_object" and sum(rewards) == 0
    env.reset(options={"configuration": 0})
    for step in range(MAX_STEPS):
        _, reward, terminated, truncated, _ = env.step(ACTION_NAMES.index("done"))
        assert reward == 0 and not terminated
    assert truncated and outcome(env) == "neither"


def test_observation_encoding_is_one_hot_with_names():
    env = make_env()
    assert len(CHANNEL_NAMES) == 20 and len(FEATURE_NAMES) == 980 == len(set(FEATURE_NAMES))
    assert ACTION_NAMES == ("left", "right", "forward", "pickup", "drop", "toggle", "done")
    assert FEATURE_NAMES[feature_index("key", 2, 6)] == "key@(2,6)"
    for index, name in enumerate(CONFIGURATIONS):
        observation, _ = env.reset(options={"configuration": index})
        features = encode_observation(observation)
        assert features.shape == (980,) and set(features.unique().tolist()) == {0.0, 1.0}
        per_cell = features.view(20, 7, 7)
        for group in (slice(0, 11), slice(11, 17), slice(17, 20)):  # object, colour, state
            assert torch.equal(per_cell[group].sum(0), torch.ones(7, 7))
        instruction = name.split("-")[0]
        other = "ball" if instruction == "key" else "key"
        # The instruction object is on the agent's left at the start: view cell (2, 6).
        assert features[feature_index(instruction, 2, 6)] == 1
        assert features[feature_index(other, 2, 6)] == 0
        # Matches MiniGrid's codes: the object channel is the code of the raw image.
        image = observation["image"]
        assert features[feature_index(CHANNEL_NAMES[image[2, 6, 0]], 2, 6)] == 1
    batch = encode_observation(np.stack([observation["image"]] * 3))
    assert batch.shape == (3, 980)


@pytest.mark.parametrize("bad, match", [
    (np.zeros((7, 7)), "shape"),
    (np.zeros((5, 5, 3)), "shape"),
    ({"image": np.zeros((7, 7, 2))}, "shape"),
    (np.full((7, 7, 3), 11), "object codes"),
    ([1, 2, 3], "observation dict"),
])
def test_encoder_rejects_bad_observations(bad, match):
    with pytest.raises(ValueError, match=match):
        encode_observation(bad)


# --- demonstrations ----------------------------------------------------------------------------

def test_demonstrations_are_deterministic_and_span_the_returns(demonstrations):
    again = make_demonstrations(300, seed=11)
    for name, tensor in demonstrations.state_dict().items():
        assert torch.equal(tensor, getattr(again, name)), name
    assert not torch.equal(make_demonstrations(20, seed=12).actions, demonstrations.actions[:20])
    returns = demonstrations.episode_returns
    assert float(returns.max()) == pytest.approx(BEST_RETURN)
    assert float(returns.min()) == 0.0
    assert ((returns > 0.1) & (returns < 0.6)).any() and ((returns > 0.6) & (returns < 0.85)).any()
    assert set(demonstrations.outcomes.tolist()) == set(range(len(OUTCOMES)))
    assert set(demonstrations.episode_kinds.tolist()) == set(range(len(EPISODE_KINDS)))
    optimal = demonstrations.episode_kinds == EPISODE_KINDS.index("optimal")
    assert (demonstrations.episode_lengths[optimal] == 6).all()
    assert torch.allclose(returns[optimal], torch.tensor(BEST_RETURN))
    wrong = demonstrations.outcomes == OUTCOMES.index("wrong_object")
    assert (returns[wrong] == 0).all()
    for episode in range(0, 300, 37):  # return-to-go and timesteps per episode
        start, length = int(demonstrations.episode_starts[episode]), int(demonstrations.episode_lengths[episode])
        rows = slice(start, start + length)
        assert torch.equal(demonstrations.timesteps[rows], torch.arange(length))
        assert torch.allclose(demonstrations.returns_to_go[rows], returns[episode])


def test_windows_mask_padding(demonstrations):
    episode = torch.tensor([0, 1, 2])
    offset = torch.zeros(3, dtype=torch.long)
    states, actions, returns_to_go, timesteps, mask = demonstrations.windows(episode, offset, 9)
    assert states.shape == (3, 9, 980) and actions.shape == timesteps.shape == mask.shape == (3, 9)
    lengths = demonstrations.episode_lengths[episode].clamp(max=9)
    assert torch.equal(mask.sum(1), lengths)
    episode, offset = demonstrations.sample_windows(512, 9, torch.Generator().manual_seed(0))
    assert (offset < demonstrations.n_windows(9)[episode]).all()


# --- model ------------------------------------------------------------------------------------

def test_model_forward_shapes_causality_and_hooks(model, demonstrations):
    episode, offset = demonstrations.sample_windows(4, 9, torch.Generator().manual_seed(1))
    states, actions, returns_to_go, timesteps, _ = demonstrations.windows(episode, offset, 9)
    logits = model(states, actions[:, :-1], returns_to_go, timesteps)
    assert logits.shape == (4, 9, 7)
    assert torch.allclose(model(states, actions, returns_to_go, timesteps), logits)
    short = model(states[:, :3], actions[:, :2], returns_to_go[:, :3], timesteps[:, :3])
    assert torch.allclose(short, logits[:, :3], atol=1e-5)  # causal: later steps cannot matter
    changed = states.clone()
    changed[:, 5] = changed[:, 5].roll(7, dims=-1)
    after = model(changed, actions[:, :-1], returns_to_go, timesteps)
    assert torch.allclose(after[:, :5], logits[:, :5], atol=1e-5)
    assert not torch.allclose(after[:, 5], logits[:, 5])
    _, cache = model.run_with_cache(states, actions[:, :-1], returns_to_go, timesteps)
    assert cache["pattern", 2].shape == (4, 8, 26, 26)
    assert cache["hook_embed"].shape == cache["hook_pos_embed"].shape == (4, 26, 256)
    assert torch.allclose(cache["resid_pre", 0], cache["hook_embed"] + cache["hook_pos_embed"])
    assert model.W_state.shape == (980, 256) and model.W_U.shape == (256, 7)


@pytest.mark.parametrize("change, match", [
    (lambda s, a, r, t: (s[..., :900], a, r, t), "states"),
    (lambda s, a, r, t: (s, a[:, :3], r, t), "actions"),
    (lambda s, a, r, t: (s, a, r[:, :4], t), "returns_to_go"),
    (lambda s, a, r, t: (s, a, r, t + 50), "timesteps"),
    (lambda s, a, r, t: (torch.cat([s, s[:, :1]], 1), torch.cat([a, a[:, :1]], 1),
                         torch.cat([r, r[:, :1]], 1), torch.cat([t, t[:, :1]], 1)), "1 to 9"),
])
def test_model_rejects_bad_inputs(model, demonstrations, change, match):
    states, actions, returns_to_go, timesteps, _ = demonstrations.windows(
        torch.tensor([0, 1]), torch.tensor([0, 0]), 9)
    with pytest.raises(ValueError, match=match):
        model(*change(states, actions[:, :-1], returns_to_go, timesteps))


def test_fold_layer_norm_preserves_the_policy(demonstrations):
    torch.manual_seed(3)
    unfolded = build_model(DEFAULT_MODEL_CONFIG).eval()
    with torch.no_grad():  # make LayerNorm and biases non-trivial so folding has work to do
        for name, parameter in unfolded.named_parameters():
            if ".ln" in name or "ln_final" in name or name.split(".")[-1].startswith("b"):
                parameter.add_(0.3 * torch.randn_like(parameter))
    folded = fold_layer_norm(unfolded)
    assert folded.cfg.normalization_type == "LNPre"
    assert not any("ln" in name for name in folded.state_dict())
    assert torch.allclose(folded.W_state.mean(-1), torch.zeros(980), atol=1e-6)
    inputs = demonstrations.windows(torch.arange(6), torch.zeros(6, dtype=torch.long), 9)[:4]
    expected, actual = unfolded(*inputs).log_softmax(-1), folded(*inputs).log_softmax(-1)
    assert torch.allclose(expected, actual, atol=1e-4)
    with pytest.raises(ValueError, match="already folded"):
        fold_layer_norm(folded)


# --- policy -----------------------------------------------------------------------------------

def test_policy_keeps_a_nine_step_window(model):
    env = make_env()
    policy = DecisionTransformerPolicy(model, target_return=0.8)
    observation, _ = env.reset(options={"configuration": 1})
    history = []
    for step in range(12):
        reward = 0.5 if step == 4 else 0.0  # pretend a reward arrived, to see the return drop
        action = policy.act(observation, reward)
        history.append(action)
        observation, *_ = env.step(ACTION_NAMES.index("left"))  # stay in place, never finish
        kept = min(step + 1, 9)
        assert policy.states.shape == (1, kept, 980) and policy.actions.shape == (1, kept - 1)
        assert policy.timesteps[0].tolist() == list(range(step + 1 - kept, step + 1))
        assert policy.actions[0].tolist() == history[-kept:-1]
        expected_return = 0.8 - (0.5 if step >= 4 else 0.0)
        assert float(policy.returns_to_go[0, -1]) == pytest.approx(expected_return)
        assert 0 <= action < 7
    policy.reset()
    assert policy.states.shape[1] == 0 and policy.step == 0


def test_policy_rejects_bad_inputs(model):
    policy = DecisionTransformerPolicy(model, target_return=0.892)
    observation, _ = make_env().reset(seed=0)
    with pytest.raises(ValueError, match="shape"):
        policy.act({"image": np.zeros((7, 7))})
    with pytest.raises(ValueError, match="observation dict"):
        policy.act(observation["image"])
    with pytest.raises(ValueError, match="target_return"):
        DecisionTransformerPolicy(model, float("nan"))
    with pytest.raises(ValueError, match="DecisionTransformer"):
        DecisionTransformerPolicy(torch.nn.Linear(2, 2), 0.5)
    policy.reset(2)
    with pytest.raises(ValueError, match="act_batch"):
        policy.act(observation)
    assert len(policy.act_batch([observation, observation])) == 2
    policy.reset()
    policy.step = 50
    with pytest.raises(ValueError, match="reset"):
        policy.act(observation)


@pytest.mark.parametrize("reward, message", [
    (float("nan"), r"reward must be finite, got nan; pass the reward env.step returned"),
    (float("inf"), r"reward must be finite, got inf"),
    (-float("inf"), r"reward must be finite, got -inf"),
    ("1.0", r"reward must be a number"),
    (None, r"reward must be a number"),
])
@pytest.mark.parametrize("at_step", [0, 1])
def test_policy_refuses_a_nan_or_infinite_reward(model, reward, message, at_step):
    """A NaN reward used to give NaN returns-to-go and action 0 for the rest of the episode."""
    policy = DecisionTransformerPolicy(model, target_return=0.892)
    observation, _ = make_env().reset(seed=0)
    for _ in range(at_step):
        policy.act(observation, 0.0)
    with pytest.raises(ValueError, match=message) as refused:
        policy.act(observation, reward)
    assert "\n" not in str(refused.value)
    assert policy.step == at_step and torch.isfinite(policy.returns_to_go).all()  # nothing was recorded


@settings(max_examples=40, deadline=None)
@given(st.floats(allow_nan=True, allow_infinity=True))
def test_policy_accepts_exactly_the_finite_rewards(model, reward):
    policy = DecisionTransformerPolicy(model, target_return=0.5)
    observation, _ = make_env().reset(seed=0)
    policy.act(observation, 0.0)
    with np.errstate(over="ignore", invalid="ignore"):
        valid = bool(np.isfinite(reward) and np.isfinite(np.float32(0.5) - np.float32(reward)))  # float32 context
    try:
        policy.act(observation, reward)
    except ValueError as error:
        assert not valid and "\n" not in str(error)
    else:
        assert valid and float(policy.returns_to_go[0, -1]) == pytest.approx(0.5 - reward, rel=1e-6, abs=1e-6)


def test_evaluate_and_play_episode_report_consistent_outcomes(model):
    results = evaluate(model, 0.892, episodes=6, seed=0)
    assert results["success_rate"] + results["wrong_object_rate"] + results["timeout_rate"] == pytest.approx(1)
    assert sum(results["episodes_by_configuration"].values()) == 6
    episode = play_episode(model, 0.892, configuration=2)
    assert episode.configuration == 2 and episode.outcome in OUTCOMES
    states, actions, returns_to_go, timesteps = episode.context(len(episode.actions) - 1)
    greedy = model(states, actions, returns_to_go, timesteps)[0, -1].argmax()
    assert int(greedy) == int(episode.actions[-1])


# --- training command -------------------------------------------------------------------------

def test_tiny_training_runs_end_to_end_and_loads(tmp_path):
    from utils.memory_dt.train import parse_args, train

    out, run_dir = tmp_path / "memory_dt", tmp_path / "run"
    metrics = train(parse_args(["--tiny", "--out", str(out), "--run-dir", str(run_dir), "--device", "cpu"]))
    assert (run_dir / "resume.pt").exists()
    loaded = load_model("memory_dt", device="cpu", directory=out)
    assert isinstance(loaded, DecisionTransformer) and not loaded.training
    config = json.loads((out / "config.json").read_text())
    assert config["model"] == DEFAULT_MODEL_CONFIG and config["training"]["steps"] == 20
    saved = json.loads((out / "metrics.json").read_text())
    assert saved == json.loads(json.dumps(metrics))
    for key in ("success_rate", "wrong_object_rate", "return_0", "success_rate_by_configuration",
                "training_seconds", "device"):
        assert key in saved
    assert 0 <= saved["success_rate"] <= 1 and saved["device"] == "cpu"


def test_training_resumes_where_a_killed_run_stopped(tmp_path, monkeypatch, capsys):
    import utils.memory_dt.train as training

    common = ["--tiny", "--resume-every", "10", "--device", "cpu", "--eval-episodes", "1"]
    straight = tmp_path / "straight"
    training.train(training.parse_args(common + ["--out", str(straight), "--run-dir", str(tmp_path / "a")]))

    calls = {"count": 0, "limit": 10}
    original = torch.nn.utils.clip_grad_norm_

    def counted_steps(*args, **kwargs):  # called once per optimiser step
        calls["count"] += 1
        if calls["count"] > calls["limit"]:
            raise KeyboardInterrupt  # the run is killed during step 11
        return original(*args, **kwargs)

    interrupted = tmp_path / "interrupted"
    arguments = common + ["--out", str(interrupted), "--run-dir", str(tmp_path / "b")]
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", counted_steps)
    with pytest.raises(KeyboardInterrupt):
        training.train(training.parse_args(arguments))
    assert torch.load(tmp_path / "b" / "resume.pt", weights_only=True)["step"] == 10
    calls.update(count=0, limit=10**6)
    capsys.readouterr()
    training.train(training.parse_args(arguments))
    assert "resuming from step 10" in capsys.readouterr().out and calls["count"] == 10
    expected = torch.load(straight / "weights.pt", weights_only=True)
    resumed = torch.load(interrupted / "weights.pt", weights_only=True)
    assert all(torch.equal(expected[key], resumed[key]) for key in expected)


def test_make_data_command_writes_the_deterministic_set(tmp_path):
    from utils.memory_dt.__main__ import make_data
    from utils.memory_dt.data import load_demonstrations

    make_data(["--episodes", "8", "--seed", "5", "--out", str(tmp_path / "demos.pt")])
    written = load_demonstrations(str(tmp_path / "demos.pt"))
    fresh = make_demonstrations(8, seed=5)
    assert all(torch.equal(tensor, getattr(fresh, name)) for name, tensor in written.state_dict().items())


# --- the shipped checkpoint -------------------------------------------------------------------

@needs_trained
def test_trained_model_solves_every_configuration():
    trained = utils.load_model("memory_dt", device="cpu")
    metrics = utils.load_metrics("memory_dt")
    assert metrics["success_rate"] >= 0.98 and metrics["eval_episodes"] == 500
    folded = fold_layer_norm(trained)
    for configuration in range(4):
        episode = play_episode(trained, BEST_RETURN, configuration=configuration)
        assert episode.outcome == "success" and len(episode.actions) == 6
        assert episode.total_return == pytest.approx(BEST_RETURN)
        assert play_episode(folded, BEST_RETURN, configuration=configuration).actions.tolist() \
            == episode.actions.tolist()
