"""The Chapter 1 self-checks pass on the reference answers and catch typical wrong ones."""

from __future__ import annotations

import networkx as nx
import pytest
import torch

from utils.planarity import checks
from utils.planarity.plots import draw_graphs
from utils.selfcheck import SelfCheckFailed


@pytest.fixture(scope="module")
def graphs():
    return checks.sample_graphs(64)


@pytest.fixture(scope="module")
def predictions(graphs):
    flipped = torch.zeros_like(graphs.labels, dtype=torch.bool)
    flipped[::5] = True  # a fifth of the answers wrong
    return torch.where(flipped, 1 - graphs.labels, graphs.labels)


def test_accuracy_by_edge_count_check(graphs, predictions):
    checks.check_accuracy_by_edge_count(checks.reference_accuracy_by_edge_count, predictions, graphs)

    def overall_accuracy(predicted, labels, edge_counts, values):  # ignores the edge counts
        return torch.full((len(values),), (predicted == labels).float().mean().item())

    with pytest.raises(SelfCheckFailed, match="differs"):
        checks.check_accuracy_by_edge_count(overall_accuracy, predictions, graphs)

    def integer_counts(predicted, labels, edge_counts, values):
        return torch.stack([(predicted == labels)[edge_counts == m].sum() for m in values])

    with pytest.raises(SelfCheckFailed, match="dtype"):
        checks.check_accuracy_by_edge_count(integer_counts, predictions, graphs)


def test_relabel_check(graphs):
    checks.check_relabel(checks.reference_relabel, graphs.adjacency)

    def rows_only(adjacency, permutation):  # P A: forgets to permute the columns
        return adjacency[..., permutation, :]

    with pytest.raises(SelfCheckFailed):
        checks.check_relabel(rows_only, graphs.adjacency)

    def inverse(adjacency, permutation):  # P^T A P: the inverse renaming
        inverse_permutation = torch.argsort(permutation)
        return adjacency[..., inverse_permutation, :][..., :, inverse_permutation]

    with pytest.raises(SelfCheckFailed):
        checks.check_relabel(inverse, graphs.adjacency)


def test_relabel_reference_is_p_a_p_transpose(graphs):
    permutation = torch.tensor([3, 0, 9, 1, 2, 8, 4, 7, 5, 6])
    matrix = torch.eye(10)[permutation]  # P[i, permutation[i]] = 1
    assert torch.equal(checks.reference_relabel(graphs.adjacency[0], permutation), matrix @ graphs.adjacency[0] @ matrix.T)


def test_kuratowski_kind_check(graphs):
    checks.check_kuratowski_kind(checks.reference_kuratowski_kind, graphs.adjacency, graphs.labels)
    with pytest.raises(SelfCheckFailed, match="expected"):
        checks.check_kuratowski_kind(lambda certificate: "K5", graphs.adjacency, graphs.labels)

    def by_vertex_count(certificate):  # wrong once K5 is subdivided
        return "K5" if certificate.number_of_nodes() == 5 else "K3,3"

    with pytest.raises(SelfCheckFailed):
        checks.check_kuratowski_kind(by_vertex_count, graphs.adjacency, graphs.labels)


def test_stub_is_reported_as_not_implemented(graphs):
    def stub(certificate):
        raise NotImplementedError()

    with pytest.raises(SelfCheckFailed, match="NotImplementedError"):
        checks.check_kuratowski_kind(stub, graphs.adjacency, graphs.labels)


def test_reference_kuratowski_kind_rejects_other_graphs():
    with pytest.raises(ValueError, match="not a subdivision"):
        checks.reference_kuratowski_kind(nx.petersen_graph())


def test_draw_graphs_highlights_the_certificate_edges():
    graph = nx.petersen_graph()
    certificate = nx.check_planarity(graph, counterexample=True)[1]
    figure = draw_graphs([graph, nx.cycle_graph(10)], [certificate, None], ["petersen", "cycle"])
    red_lines = [trace for trace in figure.data if trace.mode == "lines" and trace.line.color == "#d62728"]
    assert len(red_lines) == 2  # one highlighted-edge trace per panel (empty for the cycle)
    assert sum(x is None for x in red_lines[0].x) == certificate.number_of_edges()
    assert red_lines[1].x == ()
    with pytest.raises(ValueError, match="one of each"):
        draw_graphs([graph], [None, None])


def test_draw_graphs_fits_the_notebook_and_breaks_long_panel_titles():
    from utils.planarity.plots import MAX_WIDTH

    graphs = [nx.complete_graph(5)] * 6
    wide = draw_graphs(graphs, None, ["g"] * 6, cols=4, size=300)
    assert wide.layout.width <= MAX_WIDTH  # wider figures are cut off in JupyterLab's output area
    titles = ["K5 + 5 isolated vertices: P(planar) 1.00"] * 6
    figure = draw_graphs(graphs, None, titles, cols=3, size=260)
    assert all(note.text == "K5 + 5 isolated vertices:<br>P(planar) 1.00" for note in figure.layout.annotations)
    short = draw_graphs(graphs, None, ["K5: P(planar) 1.00"] * 6, cols=3, size=260)
    assert all("<br>" not in note.text for note in short.layout.annotations)
