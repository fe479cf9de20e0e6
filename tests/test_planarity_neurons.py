"""The zoom-in tools of notebook 1.3 on planted data and a fresh model, and their self-checks."""

from __future__ import annotations

import networkx as nx
import pytest
import torch

from utils.planarity import neuron_checks, neurons
from utils.planarity.checks import sample_graphs
from utils.planarity.data import graph_from_adjacency
from utils.planarity.model import PLANAR
from utils.selfcheck import SelfCheckFailed


@pytest.fixture(scope="module")
def model(untrained_planarity_model):
    return untrained_planarity_model


@pytest.fixture(scope="module")
def graphs():
    return sample_graphs(24, seed=5)


@pytest.fixture(scope="module")
def cache(model, graphs):
    return model.run_with_cache(graphs.adjacency)[1]


def test_qk_terms_add_up_to_the_layer0_scores(model, graphs, cache):
    terms = neurons.layer0_qk_terms(model, 5)
    # score[i, j] = sum over the terms, with each W_E term summed over the neighbours of i (query) or j (key)
    adjacency = graphs.adjacency[0]
    eye = torch.eye(10)
    query_rows = {"W_pos": eye, "W_E": adjacency}
    scores = sum(query_rows[name.split(" ")[1]] @ term @ query_rows[name.split(" ")[-1]].T for name, term in terms.items())
    attention = model.blocks[0].attn
    bias_terms = ((cache["resid_pre", 0][0] @ attention.W_Q[5] + attention.b_Q[5]) @ attention.b_K[5] / 32 ** 0.5)[:, None] \
        + (attention.b_Q[5] @ (cache["resid_pre", 0][0] @ attention.W_K[5]).T / 32 ** 0.5)[None, :]
    assert torch.allclose(scores + bias_terms, cache["attn_scores", 0][0, 5], atol=1e-3)
    assert neurons.diagonal_gap(torch.eye(4) * 3 + 1) == pytest.approx(3.0)


def test_degree_probe_and_neuron_correlation_on_planted_signals(graphs):
    degree = graphs.adjacency.sum(dim=-1)
    generator = torch.Generator().manual_seed(0)
    direction = torch.randn(16, generator=generator)
    resid = torch.randn(24, 10, 16, generator=generator) * 0.01 + degree[..., None] * direction
    r_squared, probe = neurons.degree_probe(resid, degree)
    reading = (resid @ probe).flatten()
    assert r_squared > 0.99 and torch.corrcoef(torch.stack([reading, degree.flatten()]))[0, 1] > 0.999
    noise_r2, _ = neurons.degree_probe(torch.randn(24, 10, 16, generator=generator), degree)
    assert noise_r2 < 0.2
    activations = torch.stack([3 * degree - 1, -degree, torch.zeros_like(degree)], dim=-1)
    assert torch.allclose(neurons.neuron_degree_correlation(activations, degree), torch.tensor([1.0, -1.0, 0.0]), atol=1e-5)


def test_components_and_attributions_add_up_to_the_logits(model, graphs, cache):
    names, components = neurons.residual_components(model, cache)
    assert len(names) == 2 + 2 * (8 + 2) and names[-1] == "MLP 1"
    assert torch.allclose(components.sum(dim=0), cache["resid_post", 1], atol=1e-4)
    logits = model(graphs.adjacency)
    attribution = neurons.direct_logit_attribution(model, components)
    bias = model.b_U[PLANAR] - model.b_U[1 - PLANAR]
    assert torch.allclose(attribution.sum(dim=0) + bias, logits[:, PLANAR] - logits[:, 1 - PLANAR], atol=1e-3)
    per_neuron = neurons.neuron_logit_attribution(model, cache, 1)
    mlp = attribution[names.index("MLP 1")]
    assert torch.allclose(per_neuron.sum(dim=1) + model.b_out[1] @ neurons.logit_direction(model), mlp, atol=1e-3)
    groups = neurons.group_by_layer(names)
    assert groups.tolist() == [0, 0] + [1] * 10 + [2] * 10
    table = neurons.logit_attribution_table(model, {"a": graphs.adjacency[:5]}, groups=["MLP 1", "0.3"])
    assert list(table.index) == ["MLP 1", "0.3"] and table.loc["MLP 1", "a"] == pytest.approx(mlp[:5].mean().item(), abs=1e-4)


def test_out_of_distribution_sets_are_what_they_claim(model):
    k33 = neurons.padded_kuratowski_graphs("K3,3", 5, seed=0)
    assert (k33.labels == 0).all() and (k33.edge_counts == 9).all()
    for matrix in k33.adjacency:
        graph = graph_from_adjacency(matrix)
        core = graph.subgraph([vertex for vertex in graph if graph.degree(vertex) > 0])
        assert nx.is_isomorphic(core, nx.complete_bipartite_graph(3, 3))
    assert not torch.equal(k33.adjacency[0], k33.adjacency[1]), "the vertices are renamed at random"
    k5 = neurons.padded_kuratowski_graphs("K5", 3, seed=0)
    assert (k5.edge_counts == 10).all() and (k5.labels == 0).all()
    with pytest.raises(ValueError, match="K5"):
        neurons.padded_kuratowski_graphs("K4", 1)
    maximal = neurons.maximal_planar_graphs(3, seed=1)
    assert (maximal.edge_counts == 24).all() and (maximal.labels == 1).all()
    over_full = neurons.maximal_planar_graphs(3, extra_edges=1, seed=1)
    assert (over_full.edge_counts == 25).all() and (over_full.labels == 0).all()
    table = neurons.accuracy_table(model, {"k33": k33, "maximal": maximal})
    assert list(table.index) == ["k33", "maximal"] and table.loc["maximal", "planar"] == 1.0


def test_qk_term_check(model):
    neuron_checks.check_qk_term(neurons.qk_term, model)

    def unscaled(query_input, key_input, W_Q, W_K):
        return (query_input @ W_Q) @ (key_input @ W_K).T

    with pytest.raises(SelfCheckFailed, match="sqrt"):
        neuron_checks.check_qk_term(unscaled, model)


def test_neuron_degree_correlation_check(graphs, cache):
    degree = graphs.adjacency.sum(dim=-1)
    neuron_checks.check_neuron_degree_correlation(neurons.neuron_degree_correlation, cache["post", 0], degree)

    def covariance_only(activations, degree):
        flat = activations.reshape(-1, activations.shape[-1])
        return ((flat - flat.mean(0)) * (degree.reshape(-1) - degree.mean())[:, None]).mean(0)

    with pytest.raises(SelfCheckFailed, match="neuron_degree_correlation"):
        neuron_checks.check_neuron_degree_correlation(covariance_only, cache["post", 0], degree)


def test_direct_logit_attribution_check(model, cache):
    _, components = neurons.residual_components(model, cache)
    neuron_checks.check_direct_logit_attribution(lambda model, parts: neurons.direct_logit_attribution(model, parts), model, components)

    def summed_over_vertices(model, parts):
        return parts.sum(dim=-2) @ (model.W_U[:, 1] - model.W_U[:, 0])

    with pytest.raises(SelfCheckFailed, match="average"):
        neuron_checks.check_direct_logit_attribution(summed_over_vertices, model, components)


def test_neuron_logit_attribution_check(model, cache):
    neuron_checks.check_neuron_logit_attribution(neurons.neuron_logit_attribution, model, cache)

    def planar_logit_only(model, cache, layer):
        return cache["post", layer].mean(dim=1) * (model.W_out[layer] @ model.W_U[:, 1])

    with pytest.raises(SelfCheckFailed, match="neuron_logit_attribution"):
        neuron_checks.check_neuron_logit_attribution(planar_logit_only, model, cache)
