"""Causal tests of the planarity model's mechanism (notebook 1.3): degree probes, steering one
vertex's residual stream, baselines on degree statistics, degree-matched graph pairs, and graphs
built around a Kuratowski graph.

The lesson code (the probe, the steering hook, the ablation tables) is written by the learner in
the notebook; the functions here are the reference versions the self-checks compare against, and
the helpers that are not the lesson (graph builders, a logistic regression).
"""

from __future__ import annotations

import random

import networkx as nx
import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor

from utils.planarity.data import N_VERTICES, GraphBatch, adjacency_from_graph, batch_from_adjacency, graph_from_adjacency
from utils.planarity.model import NON_PLANAR, PLANAR, PlanarityTransformer

# --------------------------------------------------------------------------------------------
# Degree probes


@torch.no_grad()
def ridge_degree_probe(
    resid: Float[Tensor, "graph vertex d_model"], degree: Float[Tensor, "graph vertex"], ridge: float
) -> tuple[Float[Tensor, "d_model"], float]:
    """Ridge regression ``degree ≈ resid @ w + b`` over all (graph, vertex) pairs, in closed form.

    Minimises ``Σ (resid @ w + b − degree)² + ridge · |w|²``; the bias ``b`` is not penalised (the
    features and targets are centred, ``w`` is solved for, then ``b`` restores the means).
    ``ridge = 0`` gives the minimum-norm least-squares fit. Returns ``(w, b)``.
    """
    if ridge < 0:
        raise ValueError(f"ridge must be >= 0, got {ridge}")
    features = resid.reshape(-1, resid.shape[-1]).double()
    target = degree.reshape(-1).double()
    feature_mean, target_mean = features.mean(dim=0), target.mean()
    centred = features - feature_mean
    if ridge == 0:
        weights = torch.linalg.pinv(centred) @ (target - target_mean)
    else:
        gram = centred.T @ centred + ridge * torch.eye(features.shape[1], dtype=features.dtype)
        weights = torch.linalg.solve(gram, centred.T @ (target - target_mean))
    bias = target_mean - feature_mean @ weights
    return weights.float(), bias.item()


def r_squared(predicted: Tensor, target: Tensor) -> float:
    """``1 − mean squared error / variance of the target`` (can be negative for a bad predictor)."""
    predicted, target = predicted.reshape(-1).double(), target.reshape(-1).double()
    return (1 - (predicted - target).pow(2).mean() / target.var(unbiased=False)).item()


def correlation(x: Tensor, y: Tensor) -> float:
    """Pearson correlation of two tensors of the same number of entries, flattened."""
    return torch.corrcoef(torch.stack([x.reshape(-1).double(), y.reshape(-1).double()]))[0, 1].item()


def degree_slope_direction(
    resid: Float[Tensor, "graph vertex d_model"], degree: Float[Tensor, "graph vertex"]
) -> Float[Tensor, "d_model"]:
    """The mean change of the residual stream per unit of degree: each dimension regressed on degree.

    Unlike a probe (which finds a direction that *reads* degree), this is the direction along which
    the residual stream *moves* when degree goes up by one, and everything correlated with degree
    moves with it.
    """
    features = resid.reshape(-1, resid.shape[-1]).double()
    target = degree.reshape(-1).double()
    centred_target = target - target.mean()
    slope = (features - features.mean(dim=0)).T @ centred_target / centred_target.pow(2).sum()
    return slope.float()


# --------------------------------------------------------------------------------------------
# Steering one vertex


@torch.no_grad()
def steer_vertex(
    model: PlanarityTransformer,
    adjacency: Float[Tensor, "graph vertex vertex"],
    vertices: Int[Tensor, "graph"],
    vector: Float[Tensor, "d_model"],
    hook_name: str = "blocks.0.hook_resid_post",
) -> tuple[Float[Tensor, "graph"], Float[Tensor, "graph head"]]:
    """Add ``vector`` to the residual stream of vertex ``vertices[g]`` of each graph ``g`` at ``hook_name``.

    Returns the logit difference (planar − non-planar) of each graph, and the mean attention each
    layer-1 head pays to the steered vertex from the *other* vertices (queries ≠ that vertex).
    """
    rows = torch.arange(len(adjacency))
    recorded: dict[str, Tensor] = {}

    def add(resid: Tensor, hook) -> Tensor:
        resid = resid.clone()
        resid[rows, vertices] += vector
        return resid

    def record(pattern: Tensor, hook) -> None:
        recorded["pattern"] = pattern

    logits = model.run_with_hooks(adjacency, fwd_hooks=[(hook_name, add), ("blocks.1.attn.hook_pattern", record)])
    return logits[:, PLANAR] - logits[:, NON_PLANAR], attention_received(recorded["pattern"], vertices)


def attention_received(
    pattern: Float[Tensor, "graph head query key"], vertices: Int[Tensor, "graph"]
) -> Float[Tensor, "graph head"]:
    """Mean attention that the queries other than ``vertices[g]`` pay to key ``vertices[g]``."""
    rows = torch.arange(len(pattern))
    to_vertex = pattern[rows, :, :, vertices]  # [graph, head, query]
    others = torch.ones(to_vertex.shape[0], to_vertex.shape[-1], dtype=torch.bool, device=pattern.device)
    others[rows, vertices] = False
    return (to_vertex * others[:, None, :]).sum(dim=-1) / others.sum(dim=-1, keepdim=True)


# --------------------------------------------------------------------------------------------
# Baselines: how far do degree statistics get?


def graph_statistics(adjacency: Float[Tensor, "graph vertex vertex"], features: str) -> Float[Tensor, "graph feature"]:
    """Hand-made graph features for a baseline classifier.

    ``"degrees"``: the sorted degree sequence; ``"degrees + triangles"``: also the edge count and
    the number of triangles; ``"degrees + triangles + 4-cycles"``: also the degree histogram, the
    number of vertices of degree ≥ k (k = 1..9), the sum of squared degrees and the number of 4-cycles.
    """
    adjacency = adjacency.float()
    degree = adjacency.sum(dim=-1)
    sorted_degrees = degree.sort(dim=-1, descending=True).values
    if features == "degrees":
        return sorted_degrees
    edges = degree.sum(dim=-1, keepdim=True) / 2
    triangles = torch.einsum("gij,gjk,gki->g", adjacency, adjacency, adjacency)[:, None] / 6
    if features == "degrees + triangles":
        return torch.cat([sorted_degrees, edges, triangles], dim=-1)
    if features == "degrees + triangles + 4-cycles":
        histogram = torch.stack([(degree == k).float().sum(dim=-1) for k in range(N_VERTICES)], dim=-1)
        at_least = torch.stack([(degree >= k).float().sum(dim=-1) for k in range(1, N_VERTICES)], dim=-1)
        common = (adjacency @ adjacency) * (1 - torch.eye(N_VERTICES))
        four_cycles = (common * (common - 1) / 2).sum(dim=(-1, -2))[:, None] / 4
        squares = degree.pow(2).sum(dim=-1, keepdim=True)
        return torch.cat([sorted_degrees, edges, triangles, histogram, at_least, squares, four_cycles], dim=-1)
    raise ValueError(
        f"unknown features {features!r}: use 'degrees', 'degrees + triangles' or 'degrees + triangles + 4-cycles'"
    )


def fit_logistic_regression(
    features: Float[Tensor, "graph feature"], labels: Int[Tensor, "graph"], l2: float = 1e-4
):
    """A logistic regression (standardised features, L2 penalty ``l2``, L-BFGS), returned as a predictor.

    The predictor maps features ``[graph, feature]`` to predicted labels ``[graph]`` (1 = planar).
    """
    with torch.enable_grad():
        mean, scale = features.mean(dim=0), features.std(dim=0) + 1e-6
        standardised = (features - mean) / scale
        weights = torch.zeros(features.shape[1], requires_grad=True)
        bias = torch.zeros(1, requires_grad=True)
        optimiser = torch.optim.LBFGS([weights, bias], lr=1, max_iter=300, line_search_fn="strong_wolfe")

        def closure():
            optimiser.zero_grad()
            loss = F.binary_cross_entropy_with_logits(standardised @ weights + bias, labels.float()) + l2 * weights.pow(2).sum()
            loss.backward()
            return loss

        optimiser.step(closure)
    weights, bias = weights.detach(), bias.detach()
    return lambda new: ((((new - mean) / scale) @ weights + bias) > 0).long()


# --------------------------------------------------------------------------------------------
# Graphs built for a test


def degree_preserving_flips(
    adjacency: Float[Tensor, "graph vertex vertex"], seed: int = 0, tries: int = 100
) -> tuple[Float[Tensor, "pair vertex vertex"], Float[Tensor, "pair vertex vertex"]]:
    """For each graph, a double-edge swap that keeps every vertex's degree and flips planarity.

    A swap replaces edges ``a–b`` and ``c–d`` (four distinct vertices) by ``a–d`` and ``c–b``, when
    those are not edges yet. Up to ``tries`` random swaps are tried per graph; graphs for which none
    flips planarity are skipped. Returns ``(originals, swapped)``, one pair per row.
    """
    generator = random.Random(seed)
    originals, swapped = [], []
    for matrix in adjacency:
        graph = graph_from_adjacency(matrix)
        planar = nx.check_planarity(graph)[0]
        edges = list(graph.edges())
        for _ in range(tries):
            (a, b), (c, d) = generator.sample(edges, 2)
            if generator.random() < 0.5:
                c, d = d, c
            if len({a, b, c, d}) < 4 or graph.has_edge(a, d) or graph.has_edge(c, b):
                continue
            candidate = graph.copy()
            candidate.remove_edges_from([(a, b), (c, d)])
            candidate.add_edges_from([(a, d), (c, b)])
            if nx.check_planarity(candidate)[0] != planar:
                originals.append(matrix)
                swapped.append(adjacency_from_graph(candidate))
                break
    if not originals:
        raise ValueError("no swap flipped planarity for any graph: give more graphs or more tries")
    return torch.stack(originals), torch.stack(swapped)


def kuratowski_variants(kind: str, n_graphs: int, seed: int = 0, subdivisions: int = 0, pad_edges: int = 0) -> GraphBatch:
    """K5 or K3,3 on 10 vertices, with ``subdivisions`` edges subdivided (each by one new vertex) and
    ``pad_edges`` random edges among the vertices outside the Kuratowski graph; vertices renamed at random.

    Every graph is non-planar. The vertices left over stay isolated.
    """
    bases = {"K5": nx.complete_graph(5), "K3,3": nx.complete_bipartite_graph(3, 3)}
    if kind not in bases:
        raise ValueError(f"kind must be 'K5' or 'K3,3', got {kind!r}")
    spare = N_VERTICES - bases[kind].number_of_nodes() - subdivisions
    if subdivisions < 0 or pad_edges < 0 or spare < 0:
        raise ValueError(f"{kind} with {subdivisions} subdivisions does not fit on {N_VERTICES} vertices")
    if pad_edges > spare * (spare - 1) // 2:
        raise ValueError(f"{pad_edges} edges do not fit among the {spare} spare vertices")
    generator = random.Random(seed)
    matrices = []
    for _ in range(n_graphs):
        graph = nx.Graph(bases[kind])
        new = graph.number_of_nodes()
        for u, v in generator.sample(sorted(graph.edges()), subdivisions):
            graph.remove_edge(u, v)
            graph.add_edges_from([(u, new), (new, v)])
            new += 1
        pads = list(range(new, N_VERTICES))
        graph.add_nodes_from(pads)
        pairs = [(u, v) for i, u in enumerate(pads) for v in pads[i + 1:]]
        graph.add_edges_from(generator.sample(pairs, pad_edges))
        order = list(range(N_VERTICES))
        generator.shuffle(order)
        matrices.append(adjacency_from_graph(nx.relabel_nodes(graph, dict(zip(range(N_VERTICES), order)))))
    return batch_from_adjacency(torch.stack(matrices))
