"""The shared intervention tools (utils.causal) on a freshly initialised planarity model and the modular model."""

from __future__ import annotations

import pytest
import torch

from utils import causal
from utils.planarity import circuit
from utils.planarity.checks import sample_graphs


@pytest.fixture(scope="module")
def model(untrained_planarity_model):
    return untrained_planarity_model


@pytest.fixture(scope="module")
def graphs():
    return sample_graphs(24, seed=5)


@pytest.fixture(scope="module")
def clean_and_corrupted(graphs):
    return graphs.adjacency[:12], graphs.adjacency[12:]


def test_component_names_map_to_hook_points(model):
    assert causal.component(model, "1.2") == causal.Component("1.2", "blocks.1.attn.hook_z", 2)
    assert causal.component(model, "MLP 0") == causal.Component("MLP 0", "blocks.0.hook_mlp_out", None)
    assert causal.component(model, "N1.320") == causal.Component("N1.320", "blocks.1.mlp.hook_post", 320)
    assert causal.component(model, "embed").hook_name == "hook_embed"
    assert len(causal.head_names(model)) == 16 and causal.mlp_names(model) == ["MLP 0", "MLP 1"]


@pytest.mark.parametrize("name, message", [
    ("2.0", "layer 2 does not exist"), ("1.8", "head 8 does not exist"), ("-1.2", "unknown component"),
    ("MLP 2", "layer 2 does not exist"), ("N1.512", "neuron 512 does not exist"), ("head 3", "unknown component"),
])
def test_bad_component_names_fail_in_one_line(model, name, message):
    with pytest.raises(ValueError, match=message) as error:
        causal.component(model, name)
    assert "\n" not in str(error.value)


def test_duplicate_components_are_refused(model):
    with pytest.raises(ValueError, match="listed twice"):
        causal.components(model, ["1.2", "MLP 0", "1.2"])


def test_ablation_values():
    reference = torch.arange(24.0).reshape(4, 3, 2)
    assert torch.equal(causal.ablation_values(reference, 5, "zero"), torch.zeros(5, 3, 2))
    per_position = causal.ablation_values(reference, 5, "mean")
    assert torch.equal(per_position, reference.mean(0).expand(5, 3, 2))
    pooled = causal.ablation_values(reference, 5, "mean", per_position=False)
    assert torch.equal(pooled, reference.mean((0, 1)).expand(5, 3, 2))
    resampled = causal.ablation_values(reference, 50, "resample", generator=torch.Generator().manual_seed(0))
    assert all(any(torch.equal(row, candidate) for candidate in reference) for row in resampled)
    assert len({tuple(row.flatten().tolist()) for row in resampled}) > 1
    with pytest.raises(ValueError, match="ablation kind"):
        causal.ablation_values(reference, 5, "median")


def test_ablating_nothing_changes_nothing(model, graphs):
    reference = causal.reference_cache(model, graphs.adjacency, ["1.2"])
    assert torch.allclose(causal.run_with_ablation(model, graphs.adjacency, [], reference), model(graphs.adjacency))


def test_mean_ablation_of_a_head_equals_a_hand_written_hook(model, graphs):
    reference = causal.reference_cache(model, graphs.adjacency, ["0.3"])
    mean_z = reference["blocks.0.attn.hook_z"][:, :, 3].mean(0)

    def hook(z, hook):
        z = z.clone()
        z[:, :, 3] = mean_z
        return z

    expected = model.run_with_hooks(graphs.adjacency, fwd_hooks=[("blocks.0.attn.hook_z", hook)])
    actual = causal.run_with_ablation(model, graphs.adjacency, ["0.3"], reference, "mean")
    assert torch.allclose(actual, expected)
    assert not torch.allclose(actual, model(graphs.adjacency), atol=1e-4)


def test_resample_ablation_uses_one_draw_for_every_component(model, graphs):
    reference = causal.reference_cache(model, graphs.adjacency, ["0.1", "MLP 1"])
    hooks = dict(causal.ablation_hooks(model, ["0.1", "MLP 1"], reference, 6, "resample", seed=3))
    z = hooks["blocks.0.attn.hook_z"](torch.zeros(6, 10, 8, 32), None)[:, :, 1]
    mlp = hooks["blocks.1.hook_mlp_out"](torch.zeros(6, 10, 128), None)
    rows_z = [next(i for i in range(24) if torch.equal(reference["blocks.0.attn.hook_z"][i, :, 1], row)) for row in z]
    rows_mlp = [next(i for i in range(24) if torch.equal(reference["blocks.1.hook_mlp_out"][i], row)) for row in mlp]
    assert rows_z == rows_mlp


def test_patching_every_writer_reproduces_the_source_run(model, clean_and_corrupted):
    clean, corrupted = clean_and_corrupted
    everything = ["embed", *causal.head_names(model), *causal.mlp_names(model)]
    _, source = model.run_with_cache(clean)
    patched = causal.run_with_patch(model, corrupted, everything, source)
    assert torch.allclose(patched, model(clean), atol=1e-5)
    partly = causal.run_with_patch(model, corrupted, ["1.0"], source)
    assert not torch.allclose(partly, model(clean), atol=1e-4)


def test_path_patching_into_a_query_matches_the_rebuilt_residual_stream(model, clean_and_corrupted):
    """Sender 0.3 -> head 1.2's query, other layer-0 writers frozen, MLP0 recomputed: the 1.2 tools agree."""
    clean, corrupted = clean_and_corrupted
    _, clean_cache = model.run_with_cache(clean)
    _, corrupted_cache = model.run_with_cache(corrupted)
    receiver = causal.Component("1.2 q", "blocks.1.attn.hook_q", 2)
    frozen = ["embed", *causal.head_names(model)[:8]]
    logits = causal.path_patch(model, corrupted, clean_cache, corrupted_cache, ["0.3"], [receiver], frozen)

    setup = circuit.path_patching_setup(model, 2, clean, corrupted)
    resid = setup.resid(["0.3"])
    query = resid @ model.W_Q[1, 2] + model.b_Q[1, 2]

    def set_query(q, hook):
        q = q.clone()
        q[:, :, 2] = query
        return q

    expected = model.run_with_hooks(corrupted, fwd_hooks=[("blocks.1.attn.hook_q", set_query)])
    assert torch.allclose(logits, expected, atol=1e-5)
    nothing = causal.path_patch(model, corrupted, clean_cache, corrupted_cache, [], [receiver], frozen)
    assert torch.allclose(nothing, model(corrupted), atol=1e-5)


def test_circuit_measures_agree_with_each_other(model, graphs):
    adjacency, labels = graphs.adjacency, graphs.labels
    heads = causal.head_names(model)
    reference = causal.reference_cache(model, adjacency, heads)

    def metric(logits):
        return causal.logit_difference(logits, labels).mean().item()

    curve = causal.faithfulness_curve(model, adjacency, metric, heads, reference)
    assert len(curve) == 17
    assert curve[-1] == pytest.approx(metric(model(adjacency)), abs=1e-5)
    everything_ablated = metric(causal.run_with_ablation(model, adjacency, heads, reference))
    assert curve[0] == pytest.approx(everything_ablated, abs=1e-5)

    circuit_heads = ["0.0", "1.2", "1.5"]
    drops = causal.minimality(model, adjacency, metric, circuit_heads, heads, reference)
    whole = causal.circuit_performance(model, adjacency, metric, circuit_heads, heads, reference)
    without = causal.circuit_performance(model, adjacency, metric, ["0.0", "1.5"], heads, reference)
    assert drops["1.2"] == pytest.approx(whole - without, abs=1e-6)
    in_circuit, in_model = causal.completeness_gap(model, adjacency, metric, circuit_heads, heads, [], reference)
    assert in_circuit == pytest.approx(whole) and in_model == pytest.approx(metric(model(adjacency)), abs=1e-5)
    with pytest.raises(ValueError, match="not in the circuit"):
        causal.completeness_gap(model, adjacency, metric, circuit_heads, heads, ["0.4"], reference)
    with pytest.raises(ValueError, match="not among the candidates"):
        causal.circuit_performance(model, adjacency, metric, ["MLP 0"], heads, reference)


def test_logit_difference_is_positive_exactly_when_right():
    logits = torch.tensor([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0], [1.0, 1.0, 4.0]])
    labels = torch.tensor([0, 0, 2])
    assert causal.logit_difference(logits, labels).tolist() == [1.0, -3.0, 3.0]
    two_class = torch.tensor([[0.5, 2.0], [0.5, 2.0]])
    assert torch.allclose(
        causal.logit_difference(two_class, torch.tensor([1, 0])),
        circuit.signed_logit_difference(two_class, torch.tensor([1, 0])),
    )


def test_the_tools_work_on_the_modular_model():
    from utils import load_model

    model = load_model("modular_addition", device="cpu")
    tokens = torch.tensor([[a, b, 113] for a in range(0, 113, 9) for b in range(0, 113, 13)])
    labels = (tokens[:, 0] + tokens[:, 1]) % 113
    reference = causal.reference_cache(model, tokens, ["0.1", "MLP 0"])
    intact = causal.logit_difference(model(tokens)[:, -1], labels).mean()
    ablated = causal.run_with_ablation(model, tokens, ["MLP 0"], reference, "mean")
    assert causal.logit_difference(ablated[:, -1], labels).mean() < intact - 1


def test_the_tools_take_the_decision_transformers_four_inputs():
    from utils.memory_dt.data import make_demonstrations
    from utils.memory_dt.model import DEFAULT_MODEL_CONFIG, build_model

    model = build_model(DEFAULT_MODEL_CONFIG).eval()
    demonstrations = make_demonstrations(40, seed=3)
    inputs = tuple(demonstrations.windows(torch.arange(12), torch.zeros(12, dtype=torch.long), 9)[:4])
    assert causal.batch_size_of(inputs) == 12
    reference = causal.reference_cache(model, inputs, ["0.1", "MLP 2"])
    with torch.no_grad():
        intact = model(*inputs)
    assert torch.allclose(causal.run_with_ablation(model, inputs, [], reference), intact, atol=1e-5)
    for kind in ("zero", "mean", "resample"):
        ablated = causal.run_with_ablation(model, inputs, ["0.1", "MLP 2"], reference, kind)
        assert ablated.shape == intact.shape and not torch.allclose(ablated, intact, atol=1e-4)
    _, source = model.run_with_cache(*inputs)
    assert torch.allclose(causal.run_with_patch(model, inputs, ["MLP 2"], source), intact, atol=1e-5)
