"""Where the planarity model fails: non-planar graphs built for the purpose, and error rates per source.

Notebook 1.1 uses these to look for the model's mistakes outside its training distribution
(``G(10, m)`` for ``m = 15 .. 20``, half planar for each ``m``):

* :func:`kuratowski_supergraphs` builds graphs that are non-planar *by construction*: a copy of K5
  or K3,3 (optionally with some of its edges subdivided, so that it spans more vertices) placed on
  random vertices, plus random extra edges. Any graph that contains a subdivision of K5 or K3,3 is
  non-planar (Kuratowski's theorem), so the label needs no planarity test, and the edge count can
  be chosen freely, from 9 (a bare K3,3) to 45.
* :func:`error_table` counts a model's mistakes on named sets of graphs, with a 95% confidence
  interval on the error rate (a rate measured on a few thousand graphs with few or no mistakes is
  not zero, only small).
"""

from __future__ import annotations

import math
import random
from typing import Mapping

import networkx as nx
import numpy as np
import pandas as pd
import torch
from jaxtyping import Float, Int
from torch import Tensor

from utils.planarity.data import (
    N_PAIRS, N_VERTICES, GraphBatch, adjacency_from_edge_masks, batch_from_adjacency, edge_masks_from_adjacency,
)
from utils.planarity.model import PLANAR

KURATOWSKI_GRAPHS = {"K5": nx.complete_graph(5), "K3,3": nx.complete_bipartite_graph(3, 3)}


def _kuratowski_copy(kind: str, subdivisions: int, generator: random.Random) -> nx.Graph:
    """K5 or K3,3 with ``subdivisions`` distinct edges each replaced by a path of length 2,
    its vertices placed on random vertices among ``0 .. 9`` (the others isolated)."""
    base = KURATOWSKI_GRAPHS[kind]
    graph = nx.Graph(base)
    next_vertex = base.number_of_nodes()
    for u, v in generator.sample(sorted(base.edges), subdivisions):
        graph.remove_edge(u, v)
        graph.add_edges_from([(u, next_vertex), (next_vertex, v)])
        next_vertex += 1
    places = generator.sample(range(N_VERTICES), graph.number_of_nodes())
    placed = nx.relabel_nodes(graph, dict(zip(sorted(graph.nodes), places)))
    placed.add_nodes_from(range(N_VERTICES))
    return placed


def kuratowski_supergraphs(
    kind: str, n_graphs: int, extra_edges: int = 0, subdivisions: int = 0, seed: int = 0
) -> GraphBatch:
    """``n_graphs`` non-planar graphs on 10 vertices, each a K5 or K3,3 plus random edges.

    Each graph is a copy of ``kind`` (``"K5"`` or ``"K3,3"``) with ``subdivisions`` of its edges
    subdivided once (so it spans ``5 + subdivisions`` or ``6 + subdivisions`` vertices), placed on
    random vertex positions, plus ``extra_edges`` edges drawn uniformly among the vertex pairs not
    yet joined (anywhere, including at isolated vertices). Every graph contains a subdivision of
    ``kind`` and so is non-planar: all labels are 0. Edge count: 10 (K5) or 9 (K3,3), plus
    ``subdivisions``, plus ``extra_edges``.
    """
    if kind not in KURATOWSKI_GRAPHS:
        raise ValueError(f"kind must be 'K5' or 'K3,3', got {kind!r}")
    base = KURATOWSKI_GRAPHS[kind]
    if n_graphs <= 0:
        raise ValueError(f"n_graphs must be positive, got {n_graphs}")
    spare_vertices = N_VERTICES - base.number_of_nodes()
    if not 0 <= subdivisions <= spare_vertices:
        raise ValueError(
            f"{kind} has {base.number_of_nodes()} vertices, so 0 to {spare_vertices} of its edges can be subdivided "
            f"within {N_VERTICES} vertices, got subdivisions={subdivisions}"
        )
    edges = base.number_of_edges() + subdivisions
    if not 0 <= extra_edges <= N_PAIRS - edges:
        raise ValueError(
            f"a subdivided {kind} with {edges} edges leaves room for 0 to {N_PAIRS - edges} extra edges, "
            f"got extra_edges={extra_edges}"
        )
    generator = random.Random(f"{seed}-{kind}-{subdivisions}-{extra_edges}")
    adjacency = []
    for _ in range(n_graphs):
        graph = _kuratowski_copy(kind, subdivisions, generator)
        missing = sorted(tuple(sorted(pair)) for pair in nx.non_edges(graph))
        graph.add_edges_from(generator.sample(missing, extra_edges))
        adjacency.append(nx.to_numpy_array(graph, nodelist=range(N_VERTICES), weight=None, dtype=np.float32))
    matrices = torch.from_numpy(np.stack(adjacency))
    n_edges = edges + extra_edges
    return GraphBatch(
        matrices, torch.zeros(n_graphs, dtype=torch.long), torch.full((n_graphs,), n_edges, dtype=torch.long)
    )


def add_random_edges(batch: GraphBatch, n_edges: int = 1, seed: int = 0) -> GraphBatch:
    """Each graph of ``batch`` with ``n_edges`` more edges, drawn uniformly among its missing ones,
    relabelled by networkx (adding an edge can make a planar graph non-planar).

    Adding any edge to a maximal planar graph (24 edges on 10 vertices) gives a non-planar one.
    """
    masks = edge_masks_from_adjacency(batch.adjacency)
    free = (~masks).sum(axis=1)
    if n_edges < 0 or (free < n_edges).any():
        raise ValueError(
            f"n_edges must be between 0 and the number of missing edges of every graph ({int(free.min())} here), "
            f"got {n_edges}"
        )
    generator = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(n_edges,)))
    # Random keys, +inf on existing edges: the n_edges smallest keys of a row are new edges.
    keys = np.where(masks, np.inf, generator.random(masks.shape))
    chosen = np.argsort(keys, axis=1)[:, :n_edges]
    new_masks = masks.copy()
    np.put_along_axis(new_masks, chosen, True, axis=1)
    return batch_from_adjacency(adjacency_from_edge_masks(new_masks))


def wilson_interval(errors: int, trials: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval (95% for ``z = 1.96``) for a rate of ``errors`` in ``trials``.

    Unlike ``errors / trials`` plus or minus a normal error bar, it stays inside ``[0, 1]`` and
    is not empty when ``errors`` is 0: 0 mistakes in 5,000 graphs means a rate below about
    1 in 1,300, not a rate of zero.
    """
    if trials <= 0 or not 0 <= errors <= trials:
        raise ValueError(f"need 0 <= errors <= trials and trials > 0, got errors={errors}, trials={trials}")
    rate = errors / trials
    centre = (rate + z * z / (2 * trials)) / (1 + z * z / trials)
    half_width = z * math.sqrt(rate * (1 - rate) / trials + z * z / (4 * trials * trials)) / (1 + z * z / trials)
    low = 0.0 if errors == 0 else max(0.0, centre - half_width)  # exact at the ends, where rounding
    high = 1.0 if errors == trials else min(1.0, centre + half_width)  # would leave 1e-17 off
    return low, high


@torch.no_grad()
def planar_probability(
    model: torch.nn.Module, adjacency: Float[Tensor, "graph vertex vertex"], batch_size: int = 1_000
) -> Float[Tensor, "graph"]:
    """The model's probability that each graph is planar (softmax of its two logits), on the CPU.

    Runs in batches of ``batch_size`` graphs, which is faster on a CPU than one huge batch.
    """
    device = next(model.parameters()).device
    return torch.cat([
        model(part.to(device)).softmax(dim=-1)[:, PLANAR].cpu() for part in adjacency.split(batch_size)
    ])


def error_table(
    probabilities: Mapping[str, Float[Tensor, "graph"]], sets: Mapping[str, GraphBatch]
) -> pd.DataFrame:
    """One row per named set: its size, edge counts, share planar, the model's mistakes and error rate.

    ``probabilities[name]`` is the model's P(planar) for each graph of ``sets[name]`` (see
    :func:`planar_probability`); a graph is a mistake when ``P > 0.5`` disagrees with its label.
    Columns: ``graphs``, ``edges`` (min-max), ``planar`` (share), ``mistakes``, ``error rate`` and
    the 95% Wilson interval ``low``, ``high``.
    """
    if set(probabilities) != set(sets):
        raise ValueError(
            f"probabilities and sets must name the same sets, got {sorted(probabilities)} and {sorted(sets)}"
        )
    rows = []
    for name, batch in sets.items():
        probability = probabilities[name]
        if probability.shape != batch.labels.shape:
            raise ValueError(
                f"set {name!r}: {tuple(probability.shape)} probabilities for {len(batch.labels)} graphs; "
                "pass one probability per graph"
            )
        mistakes = int(((probability > 0.5).long() != batch.labels).sum())
        low, high = wilson_interval(mistakes, len(batch.labels))
        edges = batch.edge_counts
        rows.append({
            "set": name, "graphs": len(batch.labels),
            "edges": f"{int(edges.min())}" if edges.min() == edges.max() else f"{int(edges.min())}-{int(edges.max())}",
            "planar": batch.labels.float().mean().item(), "mistakes": mistakes,
            "error rate": mistakes / len(batch.labels), "low": low, "high": high,
        })
    return pd.DataFrame(rows).set_index("set")


def mistake_indices(
    probability: Float[Tensor, "graph"], labels: Int[Tensor, "graph"]
) -> Int[Tensor, "mistake"]:
    """Indices of the graphs where ``P(planar) > 0.5`` disagrees with the label."""
    return torch.nonzero((probability > 0.5).long() != labels).squeeze(1)
