"""Self-checks for the Chapter 1 exercises: each compares the learner's function with the reference.

Call them from the notebook right after an exercise, e.g.
``checks.check_accuracy_by_edge_count(accuracy_by_edge_count, predictions, validation)``.
The references live here too (``reference_*``), so the checks need no checkpoint.
"""

from __future__ import annotations

from typing import Callable, Sequence

import networkx as nx
import torch
from jaxtyping import Float, Int
from torch import Tensor

from utils.planarity.data import GraphBatch, gnm_batch, graph_from_adjacency
from utils.selfcheck import SelfCheckFailed, assert_tensors_close, call_learner, passed


# --------------------------------------------------------------------------------------------
# Reference solutions


def reference_accuracy_by_edge_count(
    predictions: Int[Tensor, "graph"], labels: Int[Tensor, "graph"], edge_counts: Int[Tensor, "graph"],
    values: Sequence[int],
) -> Float[Tensor, "value"]:
    """Fraction of correct predictions among the graphs with ``m`` edges, for each ``m`` in ``values``."""
    correct = (predictions == labels).float()
    return torch.stack([correct[edge_counts == m].mean() for m in values])


def reference_relabel(
    adjacency: Float[Tensor, "*graph vertex vertex"], permutation: Int[Tensor, "vertex"]
) -> Float[Tensor, "*graph vertex vertex"]:
    """``P A P^T`` with ``P[i, permutation[i]] = 1``: new vertex ``i`` is old vertex ``permutation[i]``."""
    return adjacency[..., permutation, :][..., :, permutation]


def reference_kuratowski_kind(certificate: nx.Graph) -> str:
    """``"K5"`` or ``"K3,3"``: which graph the Kuratowski subgraph subdivides (from its branch vertices)."""
    branch_degrees = sorted(degree for _, degree in certificate.degree if degree >= 3)
    if branch_degrees == [4] * 5:
        return "K5"
    if branch_degrees == [3] * 6:
        return "K3,3"
    raise ValueError(f"not a subdivision of K5 or K3,3: branch vertex degrees {branch_degrees}")


# --------------------------------------------------------------------------------------------
# Checks


def check_accuracy_by_edge_count(
    accuracy_by_edge_count: Callable[..., Tensor], predictions: Int[Tensor, "graph"], graphs: GraphBatch
) -> None:
    """``accuracy_by_edge_count(predictions, labels, edge_counts, values)``: one accuracy per ``m``."""
    cases = [
        ("on a toy batch",
         torch.tensor([1, 0, 1, 1, 0, 0]), torch.tensor([1, 1, 1, 0, 0, 0]), torch.tensor([3, 3, 5, 5, 5, 7]), [7, 3, 5]),
        ("on the model's validation predictions",
         predictions, graphs.labels, graphs.edge_counts, sorted(set(graphs.edge_counts.tolist()))),
    ]
    for where, predicted, labels, edge_counts, values in cases:
        expected = reference_accuracy_by_edge_count(predicted, labels, edge_counts, values)
        actual = call_learner(accuracy_by_edge_count, predicted.clone(), labels.clone(), edge_counts.clone(), values)
        if isinstance(actual, torch.Tensor) and not actual.is_floating_point():
            raise SelfCheckFailed(
                f"accuracy_by_edge_count {where} returned dtype {actual.dtype}; convert the matches to float before averaging."
            )
        assert_tensors_close(
            f"accuracy_by_edge_count {where}", actual, expected, atol=1e-6,
            hint="Entry k is the fraction of correct predictions among the graphs whose edge count is values[k].",
        )
    passed("accuracy_by_edge_count")


def check_relabel(relabel: Callable[[Tensor, Tensor], Tensor], adjacency: Float[Tensor, "graph 10 10"]) -> None:
    """``relabel(adjacency, permutation)`` = ``P A P^T``, on one graph and on a batch."""
    generator = torch.Generator().manual_seed(0)
    n_vertices = adjacency.shape[-1]
    for attempt in range(3):
        permutation = torch.randperm(n_vertices, generator=generator)
        for name, graphs in (("one graph", adjacency[attempt]), ("a batch", adjacency[:16])):
            expected = reference_relabel(graphs, permutation)
            actual = call_learner(relabel, graphs.clone(), permutation.clone())
            assert_tensors_close(
                f"relabel({name}, permutation={permutation.tolist()})", actual, expected, atol=1e-6,
                hint="New vertex i is old vertex permutation[i]: result[i, j] = adjacency[permutation[i], permutation[j]]. "
                "It should work on [..., n, n] tensors.",
            )
    passed("relabel")


def _certificate_cases(adjacency: Float[Tensor, "graph 10 10"], labels: Int[Tensor, "graph"]) -> list[nx.Graph]:
    subdivided_k5 = nx.complete_graph(5)
    subdivided_k5.remove_edge(0, 1)
    nx.add_path(subdivided_k5, [0, 5, 6, 1])
    subdivided_k33 = nx.complete_bipartite_graph(3, 3)
    subdivided_k33.remove_edge(0, 3)
    nx.add_path(subdivided_k33, [0, 6, 3])
    cases = [nx.complete_graph(5), nx.complete_bipartite_graph(3, 3), subdivided_k5, subdivided_k33]
    for matrix in adjacency[labels == 0][:40]:
        cases.append(nx.check_planarity(graph_from_adjacency(matrix), counterexample=True)[1])
    return cases


def check_kuratowski_kind(
    kuratowski_kind: Callable[[nx.Graph], str], adjacency: Float[Tensor, "graph 10 10"], labels: Int[Tensor, "graph"]
) -> None:
    """``kuratowski_kind(certificate)`` names the graph a Kuratowski subgraph subdivides."""
    for certificate in _certificate_cases(adjacency, labels):
        expected = reference_kuratowski_kind(certificate)
        actual = call_learner(kuratowski_kind, certificate.copy())
        if actual != expected:
            degrees = sorted((degree for _, degree in certificate.degree), reverse=True)
            raise SelfCheckFailed(
                f"kuratowski_kind returned {actual!r} for a certificate with {certificate.number_of_edges()} edges "
                f"and vertex degrees {degrees}, expected {expected!r}. Count the vertices of degree 3 or more: "
                "five of degree 4 make a K5, six of degree 3 a K3,3."
            )
    passed("kuratowski_kind")


def sample_graphs(n_graphs: int = 64, seed: int = 0) -> GraphBatch:
    """A small balanced batch of ``G(10, 18)`` for tests of these checks."""
    return gnm_batch(18, n_graphs, seed=seed)
