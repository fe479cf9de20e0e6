"""The self-checks of 1.2's craft exercises (ablation, patching, greedy search, faithfulness).

Each check must pass a learner-style solution and fail on the stub and on the typical wrong
answers, with a message that says what differs.
"""

from __future__ import annotations

import pytest
import torch

from utils.planarity import circuit, circuit_checks
from utils.planarity.checks import sample_graphs
from utils.selfcheck import SelfCheckFailed


@pytest.fixture(scope="module")
def model(untrained_planarity_model):
    return untrained_planarity_model


@pytest.fixture(scope="module")
def graphs():
    return sample_graphs(32, seed=7)


def _z_hook(head, value):
    def hook(z, hook):
        z = z.clone()
        z[:, :, head] = value
        return z

    return hook


def mean_ablated_logits(model, adjacency, heads, reference_cache, *, zero=False, own_mean=False):
    cache = model.run_with_cache(adjacency)[1] if own_mean else reference_cache
    hooks = []
    for name in heads:
        layer, head = (int(part) for part in name.split("."))
        mean = cache["z", layer][:, :, head].mean(dim=0)
        hooks.append((f"blocks.{layer}.attn.hook_z", _z_hook(head, torch.zeros_like(mean) if zero else mean)))
    return model.run_with_hooks(adjacency, fwd_hooks=hooks)


def patched_logits(model, corrupted_adjacency, clean_cache, heads, *, whole_layer=False):
    hooks = []
    for name in heads:
        layer, head = (int(part) for part in name.split("."))
        if whole_layer:
            hooks.append((f"blocks.{layer}.attn.hook_z", lambda z, hook, clean=clean_cache["z", layer]: clean))
        else:
            hooks.append((f"blocks.{layer}.attn.hook_z", _z_hook(head, clean_cache["z", layer][:, :, head])))
    return model.run_with_hooks(corrupted_adjacency, fwd_hooks=hooks)


def stub(*args, **kwargs):
    raise NotImplementedError


def test_mean_ablation_check(model, graphs):
    adjacency, reference = graphs.adjacency[:16], graphs.adjacency[16:]
    circuit_checks.check_mean_ablated_logits(mean_ablated_logits, model, adjacency, reference)
    with pytest.raises(SelfCheckFailed, match="NotImplementedError"):
        circuit_checks.check_mean_ablated_logits(stub, model, adjacency, reference)
    with pytest.raises(SelfCheckFailed, match="replaced z by zeros"):
        circuit_checks.check_mean_ablated_logits(
            lambda *args: mean_ablated_logits(*args, zero=True), model, adjacency, reference)
    with pytest.raises(SelfCheckFailed, match="come from the graphs being evaluated"):
        circuit_checks.check_mean_ablated_logits(
            lambda *args: mean_ablated_logits(*args, own_mean=True), model, adjacency, reference)


def test_patching_check(model, graphs):
    clean, corrupted = graphs.adjacency[:16], graphs.adjacency[16:]
    circuit_checks.check_patched_logits(patched_logits, model, clean, corrupted)
    with pytest.raises(SelfCheckFailed, match="every head of the layer"):
        circuit_checks.check_patched_logits(lambda *args: patched_logits(*args, whole_layer=True), model, clean, corrupted)
    with pytest.raises(SelfCheckFailed, match="Nothing changed"):
        circuit_checks.check_patched_logits(lambda model, corrupted, cache, heads: model(corrupted), model, clean, corrupted)


def greedy(model, clean, corrupted, n_steps, *, cumulative=True):
    clean_logits, clean_cache = model.run_with_cache(clean)
    corrupted_logits = model(corrupted)
    chosen, result = [], []
    for _ in range(n_steps):
        scores = {}
        for name in [f"{layer}.{head}" for layer in range(2) for head in range(8)]:
            if name in chosen:
                continue
            patched = patched_logits(model, corrupted, clean_cache, [*chosen, name] if cumulative else [name])
            scores[name] = circuit.normalised_recovery(patched, clean_logits, corrupted_logits)
        best = max(scores, key=scores.get)
        chosen.append(best)
        result.append((best, scores[best]))
    return result


def test_greedy_search_check(model, graphs):
    planar = graphs.adjacency[graphs.labels == 1][:6]
    non_planar = graphs.adjacency[graphs.labels == 0][:6]
    circuit_checks.check_greedy_head_search(greedy, model, planar, non_planar, n_steps=3)
    with pytest.raises(SelfCheckFailed):
        circuit_checks.check_greedy_head_search(lambda *args: greedy(*args)[:2], model, planar, non_planar, n_steps=3)
    with pytest.raises(SelfCheckFailed, match="NotImplementedError"):
        circuit_checks.check_greedy_head_search(stub, model, planar, non_planar)


def faithfulness(model, adjacency, labels, circuit_heads, reference_cache, *, inverted=False):
    every = [f"{layer}.{head}" for layer in range(2) for head in range(8)]
    ablated = list(circuit_heads) if inverted else [name for name in every if name not in circuit_heads]
    logits = mean_ablated_logits(model, adjacency, ablated, reference_cache)
    intact = circuit.signed_logit_difference(model(adjacency), labels).mean()
    ratio = circuit.signed_logit_difference(logits, labels).mean() / intact
    return (logits.argmax(-1) == labels).float().mean().item(), ratio.item()


def test_faithfulness_check(model, graphs):
    adjacency, labels, reference = graphs.adjacency[:16], graphs.labels[:16], graphs.adjacency[16:]
    circuit_checks.check_circuit_faithfulness(faithfulness, model, adjacency, labels, reference)
    with pytest.raises(SelfCheckFailed, match="ablated the circuit itself"):
        circuit_checks.check_circuit_faithfulness(
            lambda *args: faithfulness(*args, inverted=True), model, adjacency, labels, reference)


def worst_knockout(model, adjacency, labels, circuit_heads, reference_cache, max_size, *, circuit_only=False):
    from itertools import combinations

    every = [f"{layer}.{head}" for layer in range(2) for head in range(8)]
    intact = circuit.signed_logit_difference(model(adjacency), labels).mean()

    def ratio(ablated):
        logits = mean_ablated_logits(model, adjacency, ablated, reference_cache)
        return (circuit.signed_logit_difference(logits, labels).mean() / intact).item()

    outside = [name for name in every if name not in circuit_heads]
    best, best_gap = None, -1.0
    for size in range(1, max_size + 1):
        for knocked_out in combinations(sorted(circuit_heads), size):
            gap = abs(ratio(outside + list(knocked_out)) - (0.0 if circuit_only else ratio(list(knocked_out))))
            if gap > best_gap:
                best, best_gap = knocked_out, gap
    return best, best_gap


def test_worst_knockout_check(model, graphs):
    adjacency, labels, reference = graphs.adjacency[:16], graphs.labels[:16], graphs.adjacency[16:]
    circuit_checks.check_worst_knockout(worst_knockout, model, adjacency, labels, reference)
    with pytest.raises(SelfCheckFailed, match="you found K|gap"):
        circuit_checks.check_worst_knockout(
            lambda *args: worst_knockout(*args, circuit_only=True), model, adjacency, labels, reference)
