"""Tools for zooming in on the planarity model (notebook 1.3): QK terms of layer-0 heads, the degree
signal, neurons, logit attribution, and graph sets outside the training distribution.

Since the model mean-pools the final residual stream over vertices and has no LayerNorm, the
direct effect of anything written into the residual stream on the logit difference
(planar − non-planar) is its mean over vertices times ``W_U[:, 1] − W_U[:, 0]``.
"""

from __future__ import annotations

import math
import random
from typing import Sequence

import networkx as nx
import pandas as pd
import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens import ActivationCache

from utils.planarity.circuit import residual_components  # notebook 1.3 uses it as neurons.residual_components
from utils.planarity.data import N_VERTICES, GraphBatch, adjacency_from_graph, batch_from_adjacency
from utils.planarity.model import NON_PLANAR, PLANAR, PlanarityTransformer

# --------------------------------------------------------------------------------------------
# Layer-0 attention from the weights


def qk_term(
    query_input: Float[Tensor, "query_row d_model"],
    key_input: Float[Tensor, "key_row d_model"],
    W_Q: Float[Tensor, "d_model d_head"],
    W_K: Float[Tensor, "d_model d_head"],
) -> Float[Tensor, "query_row key_row"]:
    """``(query_input W_Q)(key_input W_K)^T / sqrt(d_head)``: one bilinear term of a head's attention scores.

    With ``query_input = W_pos`` and ``key_input = W_E``, entry ``[i, k]`` is what a query at vertex
    ``i`` adds to the score of every key vertex that has ``k`` among its neighbours.
    """
    return (query_input @ W_Q) @ (key_input @ W_K).T / math.sqrt(W_Q.shape[-1])


def diagonal_gap(matrix: Float[Tensor, "row row"]) -> float:
    """Mean of the diagonal minus mean of the off-diagonal entries: how much a term favours "the same vertex"."""
    off_diagonal = ~torch.eye(matrix.shape[0], dtype=torch.bool, device=matrix.device)
    return (matrix.diagonal().mean() - matrix[off_diagonal].mean()).item()


def layer0_qk_terms(model: PlanarityTransformer, head: int) -> dict[str, Float[Tensor, "vertex vertex"]]:
    """The four weight-only terms of a layer-0 head's scores: query side ``W_pos`` or ``W_E``, key side likewise."""
    attention = model.blocks[0].attn
    inputs = {"W_pos": model.W_pos, "W_E": model.W_E}
    return {
        f"query {query_name} · key {key_name}": qk_term(query_input, key_input, attention.W_Q[head], attention.W_K[head])
        for query_name, query_input in inputs.items() for key_name, key_input in inputs.items()
    }


# --------------------------------------------------------------------------------------------
# The degree signal


@torch.no_grad()
def degree_probe(
    resid: Float[Tensor, "graph vertex d_model"], degree: Float[Tensor, "graph vertex"]
) -> tuple[float, Float[Tensor, "d_model"]]:
    """Fit ``degree ≈ resid @ w + b`` by least squares on the first half of the graphs; R² on the second half.

    Returns the held-out R² and the probe direction ``w``.
    """
    features = resid.reshape(-1, resid.shape[-1]).double()
    target = degree.reshape(-1).double()
    design = torch.cat([features, torch.ones(len(features), 1, dtype=features.dtype)], dim=1)
    n_fit = (resid.shape[0] // 2) * resid.shape[1]
    coefficients = torch.linalg.lstsq(design[:n_fit], target[:n_fit, None]).solution[:, 0]
    predicted = design[n_fit:] @ coefficients
    r_squared = 1 - (predicted - target[n_fit:]).pow(2).mean() / target[n_fit:].var(unbiased=False)
    return r_squared.item(), coefficients[:-1].float()


def neuron_degree_correlation(
    activations: Float[Tensor, "graph vertex neuron"], degree: Float[Tensor, "graph vertex"]
) -> Float[Tensor, "neuron"]:
    """Pearson correlation, over all (graph, vertex) pairs, of each neuron's activation with the vertex's degree.

    A neuron that never varies gets 0.
    """
    flat = activations.reshape(-1, activations.shape[-1])
    centred = flat - flat.mean(dim=0)
    centred_degree = degree.reshape(-1) - degree.mean()
    covariance = (centred * centred_degree[:, None]).sum(dim=0)
    scale = centred.norm(dim=0) * centred_degree.norm()
    return torch.where(scale > 0, covariance / scale.clamp_min(1e-12), torch.zeros_like(covariance))


# --------------------------------------------------------------------------------------------
# Logit attribution


def logit_direction(model: PlanarityTransformer) -> Float[Tensor, "d_model"]:
    """``W_U[:, planar] − W_U[:, non-planar]``: the residual direction that makes the model say "planar"."""
    return model.W_U[:, PLANAR] - model.W_U[:, NON_PLANAR]


def direct_logit_attribution(
    model: PlanarityTransformer, components: Float[Tensor, "component graph vertex d_model"]
) -> Float[Tensor, "component graph"]:
    """Each component's direct effect on the logit difference: its vertex mean times :func:`logit_direction`."""
    return components.mean(dim=-2) @ logit_direction(model)


def neuron_logit_attribution(
    model: PlanarityTransformer, cache: ActivationCache, layer: int
) -> Float[Tensor, "graph neuron"]:
    """Each neuron's direct effect on the logit difference: mean activation over vertices times ``W_out[n] · direction``."""
    return cache["post", layer].mean(dim=1) * (model.W_out[layer] @ logit_direction(model))


# --------------------------------------------------------------------------------------------
# Graphs outside the training distribution


def _shuffled(graph: nx.Graph, generator: random.Random) -> nx.Graph:
    order = list(range(N_VERTICES))
    generator.shuffle(order)
    padded = nx.convert_node_labels_to_integers(graph)
    padded.add_nodes_from(range(padded.number_of_nodes(), N_VERTICES))
    return nx.relabel_nodes(padded, dict(zip(range(N_VERTICES), order)))


def padded_kuratowski_graphs(kind: str, n_graphs: int, seed: int = 0) -> GraphBatch:
    """K5 (``kind="K5"``) or K3,3 (``"K3,3"``) padded with isolated vertices to 10, vertices renamed at random.

    Non-planar, with far fewer edges (10 or 9) than the training graphs (15 to 20).
    """
    bases = {"K5": nx.complete_graph(5), "K3,3": nx.complete_bipartite_graph(3, 3)}
    if kind not in bases:
        raise ValueError(f"kind must be 'K5' or 'K3,3', got {kind!r}")
    generator = random.Random(seed)
    graphs = [_shuffled(bases[kind], generator) for _ in range(n_graphs)]
    return batch_from_adjacency(torch.stack([adjacency_from_graph(graph) for graph in graphs]))


def maximal_planar_graphs(n_graphs: int, extra_edges: int = 0, seed: int = 0) -> GraphBatch:
    """Random maximal planar graphs on 10 vertices (24 edges), with ``extra_edges`` random edges added.

    Each is built by trying the 45 possible edges in a random order and keeping those that leave the
    graph planar. Adding any edge to a maximal planar graph makes it non-planar.
    """
    generator = random.Random(seed)
    pairs = [(u, v) for u in range(N_VERTICES) for v in range(u + 1, N_VERTICES)]
    adjacency = []
    for _ in range(n_graphs):
        graph = nx.empty_graph(N_VERTICES)
        order = pairs[:]
        generator.shuffle(order)
        for u, v in order:
            graph.add_edge(u, v)
            if not nx.check_planarity(graph)[0]:
                graph.remove_edge(u, v)
        missing = [pair for pair in pairs if not graph.has_edge(*pair)]
        graph.add_edges_from(generator.sample(missing, extra_edges))
        adjacency.append(adjacency_from_graph(graph))
    return batch_from_adjacency(torch.stack(adjacency))


@torch.no_grad()
def accuracy_table(model: PlanarityTransformer, sets: dict[str, GraphBatch]) -> pd.DataFrame:
    """Edges, share planar and the model's accuracy for each named set of graphs."""
    rows = []
    for name, batch in sets.items():
        predictions = model(batch.adjacency).argmax(dim=-1).cpu()
        rows.append({"set": name, "graphs": len(batch.labels), "edges": batch.edge_counts.float().mean().item(),
                     "planar": batch.labels.float().mean().item(),
                     "accuracy": (predictions == batch.labels).float().mean().item()})
    return pd.DataFrame(rows).set_index("set")


@torch.no_grad()
def logit_attribution_table(
    model: PlanarityTransformer, sets: dict[str, Float[Tensor, "graph vertex vertex"]], groups: Sequence[str] | None = None
) -> pd.DataFrame:
    """Mean direct logit attribution of each residual component on each set of graphs (columns: sets)."""
    columns = {}
    for name, adjacency in sets.items():
        _, cache = model.run_with_cache(adjacency)
        names, components = residual_components(model, cache)
        columns[name] = direct_logit_attribution(model, components).mean(dim=-1).cpu().numpy()
    table = pd.DataFrame(columns, index=names)
    return table.loc[list(groups)] if groups is not None else table


def group_by_layer(component_names: Sequence[str]) -> Int[Tensor, "component"]:
    """Index of each component's group: 0 = embeddings, 1 = layer 0 (heads, bias, MLP), 2 = layer 1."""
    groups = []
    for name in component_names:
        if name in ("embed", "pos"):
            groups.append(0)
        else:
            groups.append(1 + int(name.split(" ")[-1][0]) if " " in name else 1 + int(name[0]))
    return torch.tensor(groups)
