"""The circuit-finding tools of notebook 1.2, on a freshly initialised model and planted data, and their self-checks."""

from __future__ import annotations

import math

import pytest
import torch

from utils.planarity import circuit, circuit_checks
from utils.planarity.checks import sample_graphs
from utils.planarity.model import DEFAULT_MODEL_CONFIG, build_model
from utils.selfcheck import SelfCheckFailed


@pytest.fixture(scope="module")
def model(untrained_planarity_model):
    return untrained_planarity_model


@pytest.fixture(scope="module")
def graphs():
    return sample_graphs(16, seed=3)


@pytest.fixture(scope="module")
def setup(model, graphs):
    planar = graphs.adjacency[graphs.labels == 1][:3]
    non_planar = graphs.adjacency[graphs.labels == 0][:3]
    return circuit.path_patching_setup(model, 2, planar, non_planar)


def test_head_results_match_transformer_lens_per_head_results(model, graphs):
    _, cache = model.run_with_cache(graphs.adjacency)
    model.set_use_attn_result(True)
    try:
        _, reference = model.run_with_cache(graphs.adjacency)
    finally:
        model.set_use_attn_result(False)
    for layer in range(model.cfg.n_layers):
        assert torch.allclose(circuit.head_results(model, cache, layer), reference["result", layer], atol=1e-4)


def test_components_add_up_to_the_residual_stream_and_scores_decompose(model, graphs):
    _, cache = model.run_with_cache(graphs.adjacency)
    names, components = circuit.residual_components(model, cache, n_layers=1)
    assert names[:2] == ["embed", "pos"] and names[-2:] == ["bias 0", "MLP 0"] and len(names) == model.cfg.n_heads + 4
    assert torch.allclose(components.sum(dim=0), cache["resid_pre", 1], atol=1e-4)
    attention = model.blocks[1].attn
    queries = torch.cat([components @ attention.W_Q[3], attention.b_Q[3].expand(1, *components.shape[1:3], -1)])
    keys = torch.cat([components @ attention.W_K[3], attention.b_K[3].expand(1, *components.shape[1:3], -1)])
    terms = circuit.decompose_scores(queries, keys, model.cfg.d_head)
    assert torch.allclose(terms.sum(dim=(0, 1)), cache["attn_scores", 1][:, 3], atol=1e-3)


def test_rebuilt_residual_stream_is_corrupted_or_clean_at_the_extremes(model, graphs, setup):
    _, clean = model.run_with_cache(graphs.adjacency[graphs.labels == 1][:3])
    _, corrupted = model.run_with_cache(graphs.adjacency[graphs.labels == 0][:3])
    assert torch.allclose(setup.resid([]), corrupted["resid_pre", 1], atol=1e-4)
    assert torch.allclose(setup.resid(setup.component_names), clean["resid_pre", 1], atol=1e-4)
    assert not torch.allclose(setup.resid(["embed"]), corrupted["resid_pre", 1], atol=1e-3)
    assert torch.allclose(setup.pattern([], []), corrupted["pattern", 1][:, 2], atol=1e-5)
    assert setup.metric([], []) == pytest.approx(1.0) and setup.metric(setup.component_names, setup.component_names) == pytest.approx(0.0, abs=1e-4)
    with pytest.raises(ValueError, match="unknown components"):
        setup.mask(["0.9"])


def test_exhaustive_search_agrees_with_one_configuration_at_a_time(setup):
    results = circuit.exhaustive_path_patching(setup, chunk=64)
    n_components = len(setup.component_names)
    assert len(results) == 4 ** n_components
    lookup = {(query, key): metric for query, key, metric in zip(results["query"], results["key"], results["metric"])}
    for query, key in [((), ("embed",)), (("0.0", "0.7"), ()), (("embed", "0.3"), ("0.1", "0.4", "0.7"))]:
        assert lookup[(query, key)] == pytest.approx(setup.metric(query, key), abs=1e-4)
    best = circuit.best_by_size(results)
    assert list(best["n patched"]) == list(range(2 * n_components + 1))
    assert best["metric"].iloc[0] == pytest.approx(1.0) and best["metric"].iloc[-1] == pytest.approx(0.0, abs=1e-4)


def test_explain_attention_scores_recovers_planted_coefficients(graphs):
    features = circuit.graph_features(graphs.adjacency)
    generator = torch.Generator().manual_seed(0)
    planted = 2.0 * features["neighbour"] - 1.5 * features["self"] + 0.5 * features["key degree"]
    noise = 0.01 * torch.randn(planted.shape, generator=generator)
    row_shift = torch.randn(*planted.shape[:2], 1, generator=generator)  # softmax ignores this
    scores = torch.stack([planted + noise + row_shift, torch.randn(planted.shape, generator=generator)], dim=1)
    table = circuit.explain_attention_scores(scores, graphs.adjacency)
    assert table.loc[0, "neighbour"] == pytest.approx(2.0, abs=0.02)
    assert table.loc[0, "self"] == pytest.approx(-1.5, abs=0.02)
    assert table.loc[0, "key degree"] == pytest.approx(0.5, abs=0.02)
    assert table.loc[0, "R²"] > 0.99 and table.loc[1, "R²"] < 0.1


def test_mean_ablation_of_a_silent_head_changes_nothing(graphs):
    silent = build_model(DEFAULT_MODEL_CONFIG).eval()
    silent.blocks[1].attn.W_O.data[4] = 0  # head 1.4 writes nothing
    table = circuit.ablation_table(silent, graphs.adjacency, graphs.labels).set_index("component")
    assert len(table) == 1 + 2 * 8 + 2
    assert table.loc["1.4", "logit difference"] == pytest.approx(table.loc["none", "logit difference"], abs=1e-4)
    assert table.loc["MLP 1", "logit difference"] != pytest.approx(table.loc["none", "logit difference"], abs=1e-4)


def test_patching_and_greedy_ranking(model, graphs):
    planar = graphs.adjacency[graphs.labels == 1][:4]
    non_planar = graphs.adjacency[graphs.labels == 0][:4]
    clean_logits, clean_cache = model.run_with_cache(planar)
    corrupted_logits = model(non_planar)
    assert torch.allclose(circuit.patch_heads(model, non_planar, clean_cache, []), corrupted_logits, atol=1e-5)
    ranking = circuit.greedy_head_ranking(model, planar, non_planar, n_steps=2)
    assert len(ranking) == 2 and ranking["head added"].nunique() == 2
    chosen = [tuple(int(part) for part in name.split(".")) for name in ranking["head added"]]
    patched = circuit.patch_heads(model, non_planar, clean_cache, chosen)
    assert ranking["recovery"].iloc[-1] == pytest.approx(circuit.normalised_recovery(patched, clean_logits, corrupted_logits), abs=1e-5)
    assert circuit.normalised_recovery(clean_logits, clean_logits, corrupted_logits) == pytest.approx(1.0)


def test_composition_scores_and_baseline(model):
    direction = torch.randn(1, 16)
    assert circuit.composition_score(direction, direction.T @ direction) == pytest.approx(1.0, abs=1e-5)
    assert circuit.composition_score(torch.eye(16)[:4], torch.eye(16)[:, 8:] @ torch.eye(16)[8:]) == pytest.approx(0.0)
    scores = circuit.composition_scores(model)
    assert set(scores) == {"Q", "K", "V"} and all(value.shape == (2 + 8, 8) for value in scores.values())
    baseline = circuit.random_composition_scores(10, 32, 128, n_samples=50)
    assert (baseline == circuit.random_composition_scores(10, 32, 128, n_samples=50)).all()
    # a random reader of rank r keeps about sqrt(r / d_model) of a random writer
    assert baseline.mean() == pytest.approx(math.sqrt(32 / 128) / math.sqrt(32), rel=0.2)


def test_neighbour_attention_check(model, graphs):
    _, cache = model.run_with_cache(graphs.adjacency)
    patterns = torch.stack([cache["pattern", layer] for layer in range(2)], dim=1)
    circuit_checks.check_neighbour_attention(circuit_checks.reference_neighbour_attention, patterns, graphs.adjacency)

    def summed_not_averaged(patterns, adjacency):
        return (patterns * adjacency[:, None, None]).sum(dim=(-1, -2)).mean(dim=0)

    with pytest.raises(SelfCheckFailed, match="neighbour_attention"):
        circuit_checks.check_neighbour_attention(summed_not_averaged, patterns, graphs.adjacency)

    def stub(patterns, adjacency):
        raise NotImplementedError

    with pytest.raises(SelfCheckFailed, match="NotImplementedError"):
        circuit_checks.check_neighbour_attention(stub, patterns, graphs.adjacency)


def test_normalised_recovery_check():
    circuit_checks.check_normalised_recovery(circuit.normalised_recovery)

    def per_graph_ratio(patched, clean, corrupted):  # mean of ratios: blows up on graphs where clean ≈ corrupted
        difference = lambda logits: logits[:, 1] - logits[:, 0]  # noqa: E731
        return ((difference(patched) - difference(corrupted)) / (difference(clean) - difference(corrupted))).mean().item()

    with pytest.raises(SelfCheckFailed, match="normalised_recovery"):
        circuit_checks.check_normalised_recovery(per_graph_ratio)


def test_pattern_distance_metric_check(setup):
    circuit_checks.check_pattern_distance_metric(circuit.pattern_distance_metric, setup.clean_pattern, setup.corrupted_pattern)

    def ratio_of_means(patched, clean, corrupted):
        return (torch.linalg.matrix_norm(patched - clean).mean() / torch.linalg.matrix_norm(corrupted - clean).mean()).item()

    with pytest.raises(SelfCheckFailed, match="mean of ratios"):
        circuit_checks.check_pattern_distance_metric(ratio_of_means, setup.clean_pattern, setup.corrupted_pattern)


def test_composition_score_check(model):
    writer, reader = model.W_V[0, 7] @ model.W_O[0, 7], model.W_Q[1, 3] @ model.W_K[1, 3].T
    circuit_checks.check_composition_score(circuit.composition_score, writer, reader)

    def spectral_norms(writer, reader):
        norm = lambda matrix: torch.linalg.matrix_norm(matrix, ord=2)  # noqa: E731
        return (norm(writer @ reader) / (norm(writer) * norm(reader))).item()

    with pytest.raises(SelfCheckFailed, match="Frobenius"):
        circuit_checks.check_composition_score(spectral_norms, writer, reader)


def test_rebuild_resid_pre_1_check(model, setup):
    circuit_checks.check_rebuild_resid_pre_1(circuit.rebuild_resid_pre_1, model, setup.clean_components, setup.corrupted_components)

    def forgets_the_mlp(model, clean, corrupted, patched):
        return torch.where(patched[:, None, None, None], clean, corrupted).sum(dim=0) + model.W_pos + model.blocks[0].attn.b_O

    with pytest.raises(SelfCheckFailed, match="mlp"):
        circuit_checks.check_rebuild_resid_pre_1(forgets_the_mlp, model, setup.clean_components, setup.corrupted_components)


def test_table_building_tools_work_with_autograd_on(model, graphs, setup):
    """A learner who never called torch.set_grad_enabled(False) still gets tables, not a .numpy() error."""
    with torch.enable_grad():
        assert len(circuit.ablation_table(model, graphs.adjacency[:4], graphs.labels[:4])) == 19
        assert len(circuit.explain_attention_scores(model.run_with_cache(graphs.adjacency[:4])[1]["attn_scores", 0], graphs.adjacency[:4])) == 8
        assert set(circuit.composition_scores(model)) == {"Q", "K", "V"}
        assert len(circuit.exhaustive_path_patching(setup)) == 4 ** len(setup.component_names)


@pytest.mark.parametrize("layer, head", [(-1, 0), (2, 0), (1, -1), (1, 8), (1, 2.0), (True, 1)])
def test_circuit_tools_refuse_heads_and_layers_the_model_lacks(model, graphs, layer, head):
    with pytest.raises(ValueError, match="must be an integer") as error:
        circuit.attention_pattern_from_resid(model, layer, head, torch.zeros(1, 10, 128), torch.zeros(1, 10, 128))
    assert "\n" not in str(error.value)
    if layer == 1 and not isinstance(layer, bool):
        with pytest.raises(ValueError, match="head must be an integer"):
            circuit.path_patching_setup(model, head, graphs.adjacency[:2], graphs.adjacency[2:4])
