"""The failure-search tools of notebook 1.1: graphs built to be non-planar, error rates with intervals."""

from __future__ import annotations

import math

import networkx as nx
import pytest
import torch

from utils.planarity import failures
from utils.planarity.data import GraphBatch, batch_from_adjacency, gnm_batch, graph_from_adjacency
from utils.planarity.model import PLANAR


def _non_isolated(adjacency: torch.Tensor) -> torch.Tensor:
    return (adjacency.sum(dim=-1) > 0).sum(dim=-1)


@pytest.mark.parametrize("kind, base_vertices, base_edges", [("K3,3", 6, 9), ("K5", 5, 10)])
@pytest.mark.parametrize("extra_edges, subdivisions", [(0, 0), (2, 0), (0, 3), (3, 2)])
def test_kuratowski_supergraphs_are_non_planar_with_the_asked_shape(kind, base_vertices, base_edges, extra_edges, subdivisions):
    batch = failures.kuratowski_supergraphs(kind, 40, extra_edges=extra_edges, subdivisions=subdivisions, seed=3)
    assert batch.adjacency.shape == (40, 10, 10)
    assert torch.equal(batch.adjacency, batch.adjacency.transpose(1, 2)) and not batch.adjacency.diagonal(dim1=1, dim2=2).any()
    assert (batch.labels == 0).all()
    # the labels by construction agree with networkx
    assert (batch_from_adjacency(batch.adjacency).labels == 0).all()
    expected_edges = base_edges + subdivisions + extra_edges
    assert (batch.edge_counts == expected_edges).all()
    assert ((batch.adjacency.sum(dim=(1, 2)) / 2) == expected_edges).all()
    if extra_edges == 0:
        assert (_non_isolated(batch.adjacency) == base_vertices + subdivisions).all()
        # a subdivided edge adds a vertex of degree 2; the branch vertices keep their degree
        degrees = batch.adjacency.sum(dim=-1)
        assert ((degrees == 2).sum(dim=-1) == subdivisions).all()


def test_kuratowski_supergraphs_subdivisions_contain_the_right_kuratowski_graph():
    for kind, branch_degree in (("K3,3", 3), ("K5", 4)):
        batch = failures.kuratowski_supergraphs(kind, 10, subdivisions=3, seed=0)
        for matrix in batch.adjacency:
            graph = graph_from_adjacency(matrix)
            graph.remove_nodes_from([v for v in list(graph) if graph.degree(v) == 0])
            branch = [v for v in graph if graph.degree(v) >= 3]
            assert len(branch) == (6 if kind == "K3,3" else 5)
            assert all(graph.degree(v) == branch_degree for v in branch)


def test_kuratowski_supergraphs_place_the_graph_on_random_vertices_and_are_seeded():
    first = failures.kuratowski_supergraphs("K3,3", 30, seed=1)
    again = failures.kuratowski_supergraphs("K3,3", 30, seed=1)
    other = failures.kuratowski_supergraphs("K3,3", 30, seed=2)
    assert torch.equal(first.adjacency, again.adjacency)
    assert not torch.equal(first.adjacency, other.adjacency)
    used = first.adjacency.sum(dim=-1) > 0  # [graph, vertex]
    assert used.any(dim=0).all(), "over 30 copies every vertex position should be used"
    assert len({tuple(row.tolist()) for row in used}) > 10, "the copies should sit on different vertices"


def test_kuratowski_supergraphs_reject_bad_arguments_with_a_fix():
    with pytest.raises(ValueError, match="kind must be"):
        failures.kuratowski_supergraphs("K4", 3)
    with pytest.raises(ValueError, match="0 to 4 of its edges"):
        failures.kuratowski_supergraphs("K3,3", 3, subdivisions=5)
    with pytest.raises(ValueError, match="extra edges"):
        failures.kuratowski_supergraphs("K5", 3, extra_edges=40)
    with pytest.raises(ValueError, match="n_graphs must be positive"):
        failures.kuratowski_supergraphs("K5", 0)


def test_add_random_edges_adds_new_edges_and_relabels():
    batch = gnm_batch(16, 20, seed=7, balanced=False)
    grown = failures.add_random_edges(batch, 3, seed=0)
    assert (grown.edge_counts == batch.edge_counts + 3).all()
    assert ((grown.adjacency - batch.adjacency) >= 0).all(), "existing edges stay"
    assert torch.equal(grown.labels, batch_from_adjacency(grown.adjacency).labels)
    assert torch.equal(grown.adjacency, failures.add_random_edges(batch, 3, seed=0).adjacency)
    assert not torch.equal(grown.adjacency, failures.add_random_edges(batch, 3, seed=1).adjacency)
    assert torch.equal(failures.add_random_edges(batch, 0).adjacency, batch.adjacency)


def test_one_edge_more_than_a_maximal_planar_graph_is_non_planar():
    maximal = batch_from_adjacency(torch.stack([
        torch.from_numpy(nx.to_numpy_array(nx.convert_node_labels_to_integers(graph), weight=None)).float()
        for graph in _maximal_planar_examples()
    ]))
    assert (maximal.labels == 1).all() and (maximal.edge_counts == 24).all()
    plus_one = failures.add_random_edges(maximal, 1, seed=0)
    assert (plus_one.labels == 0).all() and (plus_one.edge_counts == 25).all()


def _maximal_planar_examples() -> list[nx.Graph]:
    """Triangulations of 10 vertices: a double pyramid over an 8-cycle, and a stacked triangulation
    (each new vertex joined to the three corners of an existing face)."""
    pyramid = nx.cycle_graph(8)
    pyramid.add_edges_from((8, v) for v in range(8))
    pyramid.add_edges_from((9, v) for v in range(8))
    stacked = nx.complete_graph(3)
    for new, face in zip(range(3, 10), [(0, 1, 2), (0, 1, 3), (1, 2, 3), (0, 2, 3), (0, 1, 4), (1, 3, 4), (0, 3, 4)]):
        stacked.add_edges_from((new, v) for v in face)
    return [pyramid, stacked]


def test_add_random_edges_rejects_too_many_edges():
    complete = batch_from_adjacency(torch.ones(10, 10) - torch.eye(10))
    with pytest.raises(ValueError, match="missing edges"):
        failures.add_random_edges(complete, 1)
    with pytest.raises(ValueError, match="missing edges"):
        failures.add_random_edges(complete, -1)


def test_wilson_interval_known_values_and_symmetry():
    low, high = failures.wilson_interval(0, 4992)
    assert low == 0 and high == pytest.approx(1.96 ** 2 / (4992 + 1.96 ** 2), rel=1e-9)
    low, high = failures.wilson_interval(50, 100)
    half_width = 1.96 * math.sqrt(0.25 / 100 + 1.96 ** 2 / 40000) / (1 + 1.96 ** 2 / 100)
    assert (low, high) == pytest.approx((0.5 - half_width, 0.5 + half_width))
    for errors, trials in [(3, 40), (17, 100), (1, 8000)]:
        low, high = failures.wilson_interval(errors, trials)
        mirrored_low, mirrored_high = failures.wilson_interval(trials - errors, trials)
        assert low < errors / trials < high
        assert (low, high) == pytest.approx((1 - mirrored_high, 1 - mirrored_low))
    assert failures.wilson_interval(100, 100)[1] == 1.0
    for bad in [(1, 0), (-1, 10), (11, 10)]:
        with pytest.raises(ValueError, match="errors <= trials"):
            failures.wilson_interval(*bad)


def test_planar_probability_matches_the_model_and_ignores_batch_size(untrained_planarity_model):
    batch = gnm_batch(18, 40, seed=2)
    expected = untrained_planarity_model(batch.adjacency).softmax(dim=-1)[:, PLANAR]
    assert torch.allclose(failures.planar_probability(untrained_planarity_model, batch.adjacency), expected, atol=1e-6)
    assert torch.allclose(failures.planar_probability(untrained_planarity_model, batch.adjacency, batch_size=7), expected, atol=1e-6)


def test_error_table_and_mistake_indices_count_planted_mistakes():
    labels = torch.tensor([1, 1, 0, 0, 0, 1])
    batch = GraphBatch(torch.zeros(6, 10, 10), labels, torch.tensor([15, 16, 17, 15, 15, 20]))
    probability = torch.tensor([0.9, 0.2, 0.7, 0.1, 0.5, 0.51])  # wrong: index 1 and 2; 0.5 counts as non-planar
    assert failures.mistake_indices(probability, labels).tolist() == [1, 2]
    table = failures.error_table({"planted": probability, "all right": labels.float()},
                                 {"planted": batch, "all right": batch})
    assert table.loc["planted", "mistakes"] == 2 and table.loc["planted", "graphs"] == 6
    assert table.loc["planted", "error rate"] == pytest.approx(2 / 6)
    assert table.loc["planted", "edges"] == "15-20" and table.loc["planted", "planar"] == pytest.approx(0.5)
    assert table.loc["all right", "mistakes"] == 0 and table.loc["all right", "low"] == 0
    assert (table.loc["planted", "low"], table.loc["planted", "high"]) == pytest.approx(failures.wilson_interval(2, 6))
    with pytest.raises(ValueError, match="name the same sets"):
        failures.error_table({"planted": probability}, {"other": batch})
    with pytest.raises(ValueError, match="one probability per graph"):
        failures.error_table({"planted": probability[:3]}, {"planted": batch})
