"""Chapter 3: effective weights, Fourier shares and frequency interventions (utils.modular.algorithm)."""

from __future__ import annotations

import math

import einops
import pytest
import torch

from utils import load_model
from utils.modular import algorithm, fourier
from utils.modular.data import P, all_pairs, labels_for
from utils.modular.model import DEFAULT_MODEL_CONFIG, build_model


@pytest.fixture(scope="module")
def model():
    return load_model("modular_addition", device="cpu")


@pytest.fixture(scope="module")
def key(model):
    return fourier.key_frequencies(model)


def _grid_of(function) -> torch.Tensor:
    a = torch.arange(P, dtype=torch.float64)[:, None]
    b = torch.arange(P, dtype=torch.float64)[None, :]
    return function(2 * math.pi * a / P, 2 * math.pi * b / P).float()


@torch.no_grad()
def test_w_logit_is_what_one_unit_of_a_neuron_adds_to_the_logits(model):
    weights = algorithm.effective_weights(model)
    tokens = all_pairs(P)[:7]
    clean = model(tokens)[:, -1]

    def bump(activation, hook):
        activation[:, -1, 300] += 1.0
        return activation

    bumped = model.run_with_hooks(tokens, fwd_hooks=[("blocks.0.mlp.hook_post", bump)])[:, -1]
    assert torch.allclose(bumped - clean, weights.logit[300].expand(7, -1), atol=1e-3)


@torch.no_grad()
def test_w_neur_is_what_a_head_attending_to_a_token_adds_to_the_neurons(model):
    weights = algorithm.effective_weights(model)
    head = 2

    def only_head_on_a(pattern, hook):
        pattern = torch.zeros_like(pattern)
        pattern[:, :, :, 2] = 1.0  # every head reads '='...
        pattern[:, head, 2, :] = torch.tensor([1.0, 0.0, 0.0])  # ...except one, which reads a
        return pattern

    pre = {}

    def keep(activation, hook):
        pre["x"] = activation[:, -1].clone()

    hooks = [("blocks.0.attn.hook_pattern", only_head_on_a), ("blocks.0.mlp.hook_pre", keep)]
    model.run_with_hooks(torch.tensor([[5, 0, P], [17, 0, P]]), fwd_hooks=hooks)
    assert torch.allclose(pre["x"][0] - pre["x"][1], weights.neuron[head, 5] - weights.neuron[head, 17], atol=1e-3)


@torch.no_grad()
def test_w_attn_gives_the_token_dependent_part_of_the_attention_score(model):
    weights = algorithm.effective_weights(model)
    _, cache = model.run_with_cache(torch.tensor([[5, 9, P], [40, 9, P]]), names_filter="blocks.0.attn.hook_attn_scores")
    scores = cache["blocks.0.attn.hook_attn_scores"][:, :, 2, 0]  # [input, head] from '=' to a
    assert torch.allclose(scores[0] - scores[1], weights.attention[:, 5] - weights.attention[:, 40], atol=1e-3)


def test_effective_weights_refuse_another_model():
    with pytest.raises(ValueError, match="one-layer modular-addition"):
        algorithm.effective_weights(torch.nn.Linear(2, 2))


def test_frequency_power_puts_a_wave_on_its_frequency_and_adds_up():
    x = torch.arange(P, dtype=torch.float64)
    values = torch.stack([torch.cos(2 * math.pi * 5 * x / P), 3 + torch.sin(2 * math.pi * 12 * x / P)], dim=1).float()
    power = algorithm.frequency_power(values)
    assert power.shape == (P // 2 + 1,)
    assert power.sum() == pytest.approx(float(values.pow(2).sum()), rel=1e-4)
    assert set(torch.nonzero(power > 1e-3).flatten().tolist()) == {0, 5, 12}
    assert algorithm.key_share(power, [5, 12]) == pytest.approx(float((power[5] + power[12]) / power.sum()))
    with pytest.raises(ValueError, match="first axis"):
        algorithm.frequency_power(values.T)


def test_term_shares_split_linear_product_and_sum_terms():
    w = 7
    neuron = _grid_of(lambda a, b: torch.cos(w * a) + 2 * torch.cos(w * a) * torch.cos(w * b))
    other = _grid_of(lambda a, b: torch.sin(3 * a + 3 * b))
    shares = algorithm.term_shares(torch.stack([neuron, other], dim=-1), torch.tensor([w, 3]))
    # cos(wa) has squared norm p^2/2; 2 cos(wa)cos(wb) has p^2; half of the product lies along cos(w(a+b)).
    assert shares["linear"].tolist() == pytest.approx([1 / 3, 0.0], abs=1e-4)
    assert shares["product"].tolist() == pytest.approx([2 / 3, 1.0], abs=1e-4)
    assert shares["sum"].tolist() == pytest.approx([1 / 3, 1.0], abs=1e-4)
    with pytest.raises(ValueError, match="one frequency per neuron"):
        algorithm.term_shares(torch.stack([neuron, other], dim=-1), torch.tensor([w]))
    with pytest.raises(ValueError, match="add 1"):
        algorithm.term_shares(torch.stack([neuron, other], dim=-1), torch.tensor([0, 3]))


def test_remove_frequency_removes_its_terms_and_keeps_the_rest():
    kept = _grid_of(lambda a, b: 2.0 + torch.cos(4 * a) * torch.sin(9 * b) + torch.sin(11 * (a - b)))
    removed = _grid_of(lambda a, b: torch.cos(5 * a) + torch.sin(5 * a) * torch.cos(5 * b) + torch.sin(5 * b))
    result = algorithm.remove_frequency((kept + removed)[..., None], [5])[..., 0]
    assert torch.allclose(result, kept, atol=1e-4)
    projected = algorithm.project_onto_frequency((kept + removed)[..., None], 5)[..., 0]
    assert torch.allclose(projected, removed + 2.0, atol=1e-4)
    with pytest.raises(ValueError, match="listed twice"):
        algorithm.remove_frequency(kept[..., None], [5, 5])


@torch.no_grad()
def test_removing_a_key_frequency_from_the_neurons_costs_loss_and_a_non_key_one_does_not(model, key):
    full = float(fourier.cross_entropy(model(all_pairs(P))[:, -1], labels_for(all_pairs(P))))
    non_key = next(k for k in range(1, P // 2 + 1) if k not in key)
    assert algorithm.loss_without_frequencies(model, [non_key]) < 2 * full + 1e-5
    assert algorithm.loss_without_frequencies(model, [key[0]]) > 100 * full
    assert algorithm.loss_without_frequencies(model, key) > 1.0
    hook = algorithm.frequency_removal_hook([key[0]])
    with pytest.raises(ValueError, match="all 12769 pairs"):
        model.run_with_hooks(all_pairs(P)[:10], fwd_hooks=[("blocks.0.mlp.hook_post", hook)])


@torch.no_grad()
def test_excluded_loss_per_frequency_rises_only_for_key_frequencies(model, key):
    grid = einops.rearrange(model(all_pairs(P))[:, -1], "(a b) c -> a b c", a=P)
    full = float(algorithm.loss_per_pair(grid))
    non_key = [k for k in range(1, P // 2 + 1) if k not in key][:3]
    assert all(loss > 100 * full for loss in algorithm.excluded_loss_per_frequency(grid, key).values())
    assert all(loss < 2 * full + 1e-5 for loss in algorithm.excluded_loss_per_frequency(grid, non_key).values())


def test_an_untrained_model_has_no_concentrated_w_logit(key):
    torch.manual_seed(0)
    untrained = build_model(DEFAULT_MODEL_CONFIG)
    power = algorithm.frequency_power(algorithm.effective_weights(untrained).logit.T)
    assert algorithm.key_share(power, key) < 0.2
