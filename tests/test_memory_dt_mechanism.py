"""Chapter 2.2: the episode plumbing of utils.memory_dt.mechanism, CIRCUIT tested in episodes, the self-checks."""

from __future__ import annotations

import pytest
import torch

from utils import causal, load_model
from utils.memory_dt import CIRCUIT, mechanism, mechanism_checks
from utils.memory_dt.analysis import head_names
from utils.memory_dt.model import DEFAULT_MODEL_CONFIG, build_model
from utils.selfcheck import SelfCheckFailed

HEADS = head_names(3, 8)


@pytest.fixture(scope="module")
def model(grad_disabled):
    return load_model("memory_dt", device="cpu")


@pytest.fixture(scope="module")
def windows():
    return mechanism.reference_windows(n_episodes=200, seed=11)


@pytest.fixture(scope="module")
def on_path(model, windows):
    return mechanism.on_path_windows(model, windows)


@pytest.fixture(scope="module")
def references(model, on_path):
    return mechanism.reference_caches(model, HEADS, on_path)


@pytest.fixture(scope="module")
def decision(model):
    inputs, steps = mechanism.decision_inputs(model)
    corrupted = tuple(part[[3, 2, 1, 0]] for part in inputs)  # the instruction swapped, same layout
    return inputs, corrupted


# ---------------------------------------------------------------------------------------------
# CIRCUIT, in episodes


def test_circuit_is_declared_with_the_chapters_head_names():
    assert 1 <= len(CIRCUIT) <= 8 and len(set(CIRCUIT)) == len(CIRCUIT)
    assert set(CIRCUIT) <= set(HEADS)


def test_the_model_succeeds_in_every_configuration_without_hooks(model):
    assert mechanism.episode_success(model) == [True] * 4


def test_ablating_the_circuit_breaks_at_least_two_configurations(model, references):
    assert sum(mechanism.ablated_success(model, CIRCUIT, references, "mean")) <= 2


def test_ablating_every_other_head_keeps_all_four(model, references):
    others = [head for head in HEADS if head not in CIRCUIT]
    assert mechanism.ablated_success(model, others, references, "mean") == [True] * 4
    for seed in range(5):  # and under resampling from another configuration
        assert mechanism.ablated_success(model, others, references, "resample", seed) == [True] * 4


def test_a_smaller_set_fails_the_second_half(model, references):
    """L0H6 is in CIRCUIT because without it the other heads, resampled, break play: the test can fail."""
    smaller = [head for head in CIRCUIT if head != "L0H6"]
    others = [head for head in HEADS if head not in smaller]
    outcomes = [mechanism.ablated_success(model, others, references, "resample", seed) for seed in range(5)]
    assert not all(all(ok) for ok in outcomes)


@pytest.mark.parametrize("member", CIRCUIT)
def test_every_member_is_needed_under_resampling(model, references, member):
    """Minimality: drop any one member and resampling the rest (10 draws) breaks play in some draw."""
    rest = [head for head in HEADS if head not in CIRCUIT or head == member]
    outcomes = [mechanism.ablated_success(model, rest, references, "resample", seed) for seed in range(10)]
    assert not all(all(ok) for ok in outcomes)


def test_the_mean_test_passes_without_l1h2_and_l1h3(model, references):
    """Why CIRCUIT is justified by resampling, not by the mean test: L0H1 with L0H6 passes it too, L0H1 is needed."""
    smaller = ["L0H1", "L0H6"]
    assert sum(mechanism.ablated_success(model, smaller, references, "mean")) <= 2
    assert all(mechanism.ablated_success(model, [head for head in HEADS if head not in smaller], references, "mean"))
    assert sum(mechanism.ablated_success(model, [head for head in CIRCUIT if head != "L0H1"], references, "mean")) == 4


def test_on_policy_windows_reproduce_the_on_path_contexts(model, on_path):
    from utils.memory_dt import behaviour
    from utils.memory_dt.env import BEST_RETURN
    played = behaviour.play(model, [0, 1, 2, 3], [BEST_RETURN] * 4)
    windows = mechanism.on_policy_windows(played)
    assert sorted(windows) == list(range(1, 7)) and all(len(inputs[0]) == 4 for inputs in windows.values())
    for length in windows:
        for ours, theirs in zip(windows[length], on_path[length]):
            assert torch.equal(ours.float(), theirs.float()), length
    dawdling = mechanism.on_policy_windows(behaviour.play(model, [0], [0.5]))
    assert len(dawdling[9][0]) > 1 and dawdling[9][3][:, 0].unique().numel() == len(dawdling[9][0]), "one window per end step"
    with pytest.raises(ValueError, match="behaviour.Played"):
        mechanism.on_policy_windows([])


def test_the_episode_runner_sees_the_hooks(model, references):
    """Zero-ablating all 24 heads must change behaviour; if the hooks were ignored it would not."""
    assert mechanism.ablated_success(model, HEADS, references, "zero") != [True] * 4
    untrained = build_model(DEFAULT_MODEL_CONFIG).eval()
    assert mechanism.episode_success(untrained) != [True] * 4


def test_episode_hooks_match_causal_ablation_at_one_length(model, on_path, decision):
    inputs, _ = decision
    length = inputs[0].shape[1]
    both = mechanism.reference_caches(model, ["L0H1", "MLP 2"], on_path)
    hooks = mechanism.episode_ablation_hooks(model, ["L0H1", "MLP 2"], both, 4, "mean")
    expected = causal.run_with_ablation(model, inputs, ["0.1", "MLP 2"], both[length], "mean")
    assert torch.allclose(causal.run_with_hooks(model, inputs, hooks), expected, atol=1e-5)
    assert not torch.allclose(expected, model(*inputs), atol=1e-2)


def test_reference_windows_have_one_length_each(windows, on_path):
    for length, (states, actions, returns, timesteps) in windows.items():
        assert states.shape[1] == length and actions.shape[1] == length - 1 and len(states) >= 20
    assert all(len(on_path[length][0]) == 4 for length in range(1, 7))  # the four configurations' own contexts
    assert len(on_path[9][0]) == len(windows[9][0])


def test_turn_logit_difference_signs(model, decision):
    inputs, corrupted = decision
    assert (mechanism.turn_logit_difference(model(*inputs)) > 0).all()
    assert (mechanism.turn_logit_difference(model(*corrupted)) < 0).all()  # measured against the clean answers


@pytest.mark.parametrize("call, message", [
    (lambda m, r: mechanism.causal_name(3), "string"),
    (lambda m, r: mechanism.correct_turn(4), "configuration"),
    (lambda m, r: mechanism.play_configurations(m, configurations=[5]), "configurations"),
    (lambda m, r: mechanism.play_configurations("model"), "DecisionTransformer"),
    (lambda m, r: mechanism.episode_ablation_hooks(m, ["L0H1"], r, 4, "median"), "ablation kind"),
    (lambda m, r: mechanism.episode_ablation_hooks(m, ["L3H0"], r, 4), "does not exist"),
    (lambda m, r: mechanism.reference_windows(n_episodes=3), "n_episodes"),
    (lambda m, r: mechanism.turn_logit_difference(torch.zeros(4, 7)), "logits"),
])
def test_bad_input_fails_in_one_line(model, references, call, message):
    with pytest.raises(ValueError, match=message) as error:
        call(model, references)
    assert "\n" not in str(error.value)


def test_causal_name():
    assert mechanism.causal_name("L0H1") == "0.1" and mechanism.causal_name("L2H7") == "2.7"
    assert mechanism.causal_name("MLP 2") == "MLP 2" and mechanism.causal_name("N2.199") == "N2.199"


# ---------------------------------------------------------------------------------------------
# Self-checks: pass on the reference, fail on the stub and on typical wrong answers


def stub(*args, **kwargs):
    raise NotImplementedError()


@pytest.fixture(scope="module")
def mean_z(model, references, decision):
    length = decision[0][0].shape[1]
    return torch.stack([references[length][f"blocks.{layer}.attn.hook_z"].mean(0) for layer in range(3)])


def test_mean_ablation_hook_check(model, decision, mean_z):
    inputs, _ = decision
    mechanism_checks.check_mean_ablation_hook(mechanism_checks.reference_mean_ablation_hook, model, inputs, mean_z)
    with pytest.raises(SelfCheckFailed, match="NotImplementedError"):
        mechanism_checks.check_mean_ablation_hook(stub, model, inputs, mean_z)

    def zeroes(z, hook, head, mean_z):
        z = z.clone()
        z[:, :, head] = 0
        return z

    def every_head(z, hook, head, mean_z):
        return mean_z[None, :, None].expand_as(z).clone()

    def batch_mean(z, hook, head, mean_z):
        """Averages the batch it is given instead of using mean_z: right only when the batch is the reference set."""
        z = z.clone()
        z[:, :, head] = z[:, :, head].mean(0)
        return z

    for wrong in (zeroes, every_head, batch_mean):
        with pytest.raises(SelfCheckFailed, match="differs") as error:
            mechanism_checks.check_mean_ablation_hook(wrong, model, inputs, mean_z)
        assert "\n" not in str(error.value)
    with pytest.raises(SelfCheckFailed, match="returned NoneType"):
        mechanism_checks.check_mean_ablation_hook(lambda z, hook, head, mean_z: None, model, inputs, mean_z)

    def in_place(z, hook, head, mean_z):
        z[:, :, head] = mean_z
        return z

    with pytest.raises(SelfCheckFailed, match="in place") as error:
        mechanism_checks.check_mean_ablation_hook(in_place, model, inputs, mean_z)
    assert "\n" not in str(error.value)


def test_patch_head_hook_check(model, decision):
    inputs, corrupted = decision
    mechanism_checks.check_patch_head_hook(mechanism_checks.reference_patch_head_hook, model, corrupted, inputs)
    with pytest.raises(SelfCheckFailed, match="NotImplementedError"):
        mechanism_checks.check_patch_head_hook(stub, model, corrupted, inputs)

    def every_position(z, hook, head, positions, source_z):
        z = z.clone()
        z[:, :, head] = source_z[:, :, head]
        return z

    def every_head(z, hook, head, positions, source_z):
        z = z.clone()
        z[:, positions] = source_z[:, positions]
        return z

    for wrong in (every_position, every_head):
        with pytest.raises(SelfCheckFailed, match="differs") as error:
            mechanism_checks.check_patch_head_hook(wrong, model, corrupted, inputs)
        assert "\n" not in str(error.value)

    def swapped_axes(z, hook, head, positions, source_z):
        z = z.clone()
        z[:, head, positions] = source_z[:, head, positions]
        return z

    with pytest.raises(SelfCheckFailed, match=r"z\[:, positions, head\]") as error:
        mechanism_checks.check_patch_head_hook(swapped_axes, model, corrupted, inputs)
    assert "\n" not in str(error.value)


def test_qk_ov_patch_check(model, decision):
    inputs, corrupted = decision
    mechanism_checks.check_qk_ov_patch(mechanism_checks.reference_qk_ov_patch, model, corrupted, inputs)
    with pytest.raises(SelfCheckFailed, match="NotImplementedError"):
        mechanism_checks.check_qk_ov_patch(stub, model, corrupted, inputs)

    def swapped_order(model, inputs, source_inputs, layer, head):
        pattern_only, value_only = mechanism_checks.reference_qk_ov_patch(model, inputs, source_inputs, layer, head)
        return value_only, pattern_only

    def head_on_wrong_axis(model, inputs, source_inputs, layer, head):
        """Indexes the pattern's head like hook_v's (dimension 2, a query position), a typical slip."""
        _, source = model.run_with_cache(*source_inputs)

        def patch(activation, hook):
            activation = activation.clone()
            activation[:, :, head] = source[hook.name][:, :, head]
            return activation

        return tuple(model.run_with_hooks(*inputs, fwd_hooks=[(f"blocks.{layer}.attn.hook_{name}", patch)]) for name in ("pattern", "v"))

    for wrong in (swapped_order, head_on_wrong_axis):
        with pytest.raises(SelfCheckFailed, match="differs") as error:
            mechanism_checks.check_qk_ov_patch(wrong, model, corrupted, inputs)
        assert "\n" not in str(error.value)
    with pytest.raises(SelfCheckFailed, match="tuple"):
        mechanism_checks.check_qk_ov_patch(lambda *args: None, model, corrupted, inputs)


def test_patch_hook_that_returns_nothing_is_named(model, decision):
    inputs, corrupted = decision
    with pytest.raises(SelfCheckFailed, match="returned NoneType"):
        mechanism_checks.check_patch_head_hook(lambda z, hook, head, positions, source_z: None, model, corrupted, inputs)


def test_patch_holding_check(model, decision):
    inputs, corrupted = decision
    mechanism_checks.check_patch_holding(mechanism_checks.reference_patch_holding, model, corrupted, inputs)
    with pytest.raises(SelfCheckFailed, match="NotImplementedError"):
        mechanism_checks.check_patch_holding(stub, model, corrupted, inputs)

    def ignores_held(model, inputs, source, base, patched, held):
        return mechanism_checks.reference_patch_holding(model, inputs, source, base, patched, [])

    def holds_at_source(model, inputs, source, base, patched, held):
        return mechanism_checks.reference_patch_holding(model, inputs, source, source, patched, held)

    def held_wins(model, inputs, source, base, patched, held):
        """A head listed in both lists ends up held, not patched."""
        return mechanism_checks.reference_patch_holding(model, inputs, source, base, [h for h in patched if h not in held], held)

    for wrong in (ignores_held, holds_at_source, held_wins):
        with pytest.raises(SelfCheckFailed, match="differs") as error:
            mechanism_checks.check_patch_holding(wrong, model, corrupted, inputs)
        assert "\n" not in str(error.value)
