"""Tools for finding the planarity model's circuit (notebook 1.2).

The residual stream before layer 1 is a sum of named components::

    resid_pre_1 = embed + pos + sum_h head_0.h + b_O(layer 0) + MLP0(embed + pos + sum_h head_0.h + b_O)

so a layer-1 head's query and key can be split by component, and "the path from a component to a
layer-1 head's query" can be patched by rebuilding the query from clean and corrupted components
(the paths go *through* MLP0, which is recomputed from the mixed components).

Components of layer 0 are named ``"embed"`` (``A @ W_E``) and ``"0.h"`` (head ``h``'s output);
``"pos"`` (``W_pos``) is the same for every graph, so patching it does nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd
import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor
from transformer_lens import ActivationCache

from utils import causal
from utils.planarity.model import NON_PLANAR, PLANAR, PlanarityTransformer

# --------------------------------------------------------------------------------------------
# Caching and components


def check_layer_and_head(model: PlanarityTransformer, layer: int | None = None, head: int | None = None) -> None:
    """Refuse a layer or head index the model does not have (negative indexes too: ``-1`` would silently mean the last)."""
    for what, value, size in (("layer", layer, model.cfg.n_layers), ("head", head, model.cfg.n_heads)):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < size:
            raise ValueError(f"{what} must be an integer 0 .. {size - 1} (this model has {size} {what}s), got {value!r}")


def head_results(
    model: PlanarityTransformer, cache: ActivationCache, layer: int
) -> Float[Tensor, "graph vertex head d_model"]:
    """What each head of ``layer`` writes into the residual stream: ``z @ W_O`` per head (no bias).

    Computed from ``hook_z``; turning on TransformerLens's ``use_attn_result`` gives the same
    tensor but makes every forward pass about five times slower on this model.
    """
    check_layer_and_head(model, layer)
    return torch.einsum("gvhd,hdm->gvhm", cache["z", layer], model.W_O[layer])


def head_names(model: PlanarityTransformer, layer: int) -> list[str]:
    """``["L.0", "L.1", ...]``: the names of a layer's heads."""
    check_layer_and_head(model, layer)
    return [f"{layer}.{head}" for head in range(model.cfg.n_heads)]


def layer0_component_names(model: PlanarityTransformer) -> list[str]:
    """The patchable components that write into the residual stream before layer 1: embed and the layer-0 heads."""
    return ["embed", *head_names(model, 0)]


def layer0_components(
    model: PlanarityTransformer, cache: ActivationCache
) -> Float[Tensor, "component graph vertex d_model"]:
    """The outputs of ``embed`` and each layer-0 head, in the order of :func:`layer0_component_names`."""
    heads = head_results(model, cache, 0).permute(2, 0, 1, 3)  # [head, graph, vertex, d_model]
    return torch.cat([cache["hook_embed"][None], heads])


def rebuild_resid_pre_1(
    model: PlanarityTransformer,
    clean_components: Float[Tensor, "component graph vertex d_model"],
    corrupted_components: Float[Tensor, "component graph vertex d_model"],
    patched: Bool[Tensor, "component"],
) -> Float[Tensor, "graph vertex d_model"]:
    """The residual stream before layer 1 when the ``patched`` components come from the clean run.

    The other components come from the corrupted run; ``pos`` and layer 0's output bias are
    constant, and MLP0 is recomputed from the mixed sum (so a patched path runs through MLP0).
    """
    mixed = torch.where(patched[:, None, None, None], clean_components, corrupted_components).sum(dim=0)
    resid_mid = mixed + model.W_pos + model.blocks[0].attn.b_O
    return resid_mid + model.blocks[0].mlp(resid_mid)


def attention_pattern_from_resid(
    model: PlanarityTransformer,
    layer: int,
    head: int,
    query_resid: Float[Tensor, "... vertex d_model"],
    key_resid: Float[Tensor, "... vertex d_model"],
) -> Float[Tensor, "... query_vertex key_vertex"]:
    """A head's attention pattern when its queries read ``query_resid`` and its keys ``key_resid``."""
    check_layer_and_head(model, layer, head)
    attention = model.blocks[layer].attn
    queries = query_resid @ attention.W_Q[head] + attention.b_Q[head]  # [..., vertex, d_head]
    keys = key_resid @ attention.W_K[head] + attention.b_K[head]
    scores = queries @ keys.transpose(-1, -2) / math.sqrt(model.cfg.d_head)
    return scores.softmax(dim=-1)


# --------------------------------------------------------------------------------------------
# What the attention patterns look at


def graph_features(
    adjacency: Float[Tensor, "graph vertex vertex"],
) -> dict[str, Float[Tensor, "graph query_vertex key_vertex"]]:
    """Simple facts about each (query vertex, key vertex) pair of a graph, for explaining attention.

    ``neighbour``: 1 if the two are adjacent; ``self``: 1 on the diagonal; ``key degree``: the key
    vertex's degree; ``common neighbours``: how many neighbours they share (0 on the diagonal).
    """
    n_vertices = adjacency.shape[-1]
    eye = torch.eye(n_vertices, dtype=adjacency.dtype, device=adjacency.device).expand_as(adjacency)
    degree = adjacency.sum(dim=-1)
    return {
        "neighbour": adjacency,
        "self": eye,
        "key degree": degree[:, None, :].expand_as(adjacency),
        "common neighbours": (adjacency @ adjacency) * (1 - eye),
    }


@torch.no_grad()
def explain_attention_scores(
    scores: Float[Tensor, "graph head query_vertex key_vertex"],
    adjacency: Float[Tensor, "graph vertex vertex"],
) -> pd.DataFrame:
    """Least-squares fit of each head's attention scores on :func:`graph_features`.

    Softmax ignores anything added to a whole query row, so scores and features are centred per
    query row first. Returns one row per head: the coefficient of each feature (the change in the
    score per unit of the feature) and ``R²``, the fraction of the centred scores' variance explained.
    """
    features = graph_features(adjacency)
    names = list(features)
    design = torch.stack([feature - feature.mean(dim=-1, keepdim=True) for feature in features.values()], dim=-1)
    design = design.reshape(-1, len(names)).double()
    rows = []
    for head in range(scores.shape[1]):
        target = scores[:, head] - scores[:, head].mean(dim=-1, keepdim=True)
        target = target.reshape(-1, 1).double()
        coefficients = torch.linalg.lstsq(design, target).solution
        residual = target - design @ coefficients
        r_squared = 1 - residual.pow(2).sum() / target.pow(2).sum()
        rows.append({**dict(zip(names, coefficients[:, 0].tolist())), "R²": r_squared.item()})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------------
# Ablation and activation patching


def signed_logit_difference(
    logits: Float[Tensor, "graph 2"], labels: Int[Tensor, "graph"]
) -> Float[Tensor, "graph"]:
    """(planar logit − non-planar logit), with the sign flipped for non-planar graphs: > 0 means right."""
    sign = labels.to(logits.dtype) * 2 - 1
    return (logits[:, PLANAR] - logits[:, NON_PLANAR]) * sign


@torch.no_grad()
def ablation_table(
    model: PlanarityTransformer,
    adjacency: Float[Tensor, "graph vertex vertex"],
    labels: Int[Tensor, "graph"],
    reference_adjacency: Float[Tensor, "reference vertex vertex"] | None = None,
    kind: causal.AblationKind = "mean",
    per_position: bool = True,
    seed: int = 0,
) -> pd.DataFrame:
    """Accuracy and mean signed logit difference with each head or MLP ablated, one at a time.

    The ablated component's output is replaced as :func:`utils.causal.ablation_values` says
    (``kind``: zero / mean / resample), from its activations on ``reference_adjacency`` (the
    evaluated graphs themselves when ``None``). One row per component (``"L.h"`` for heads,
    ``"MLP L"``), plus a ``"none"`` row for the intact model.
    """
    names = [*causal.head_names(model), *causal.mlp_names(model)]
    reference = causal.reference_cache(model, adjacency if reference_adjacency is None else reference_adjacency, names)

    def row(component: str, logits: Float[Tensor, "graph 2"]) -> dict[str, float | str]:
        return {"component": component, "accuracy": (logits.argmax(-1) == labels).float().mean().item(),
                "logit difference": signed_logit_difference(logits, labels).mean().item()}

    rows = [row("none", model(adjacency))]
    for name in names:
        rows.append(row(name, causal.run_with_ablation(model, adjacency, [name], reference, kind, per_position, seed)))
    return pd.DataFrame(rows)


def patch_heads(
    model: PlanarityTransformer,
    corrupted_adjacency: Float[Tensor, "graph vertex vertex"],
    clean_cache: ActivationCache,
    heads: Sequence[tuple[int, int]],
) -> Float[Tensor, "graph 2"]:
    """Logits on the corrupted graphs when the outputs of ``heads`` (``(layer, head)`` pairs) are the clean ones.

    Everything downstream of a patched head is recomputed, so this measures its total effect.
    """
    return causal.run_with_patch(model, corrupted_adjacency, [f"{layer}.{head}" for layer, head in heads], clean_cache)


def normalised_recovery(
    patched_logits: Float[Tensor, "graph 2"], clean_logits: Float[Tensor, "graph 2"], corrupted_logits: Float[Tensor, "graph 2"]
) -> float:
    """How much of the clean logit difference patching restores: 0 = corrupted, 1 = clean.

    Uses the mean over graphs of the (planar − non-planar) logit difference.
    """

    def difference(logits: Tensor) -> Tensor:
        return (logits[:, PLANAR] - logits[:, NON_PLANAR]).mean()

    return ((difference(patched_logits) - difference(corrupted_logits))
            / (difference(clean_logits) - difference(corrupted_logits))).item()


@torch.no_grad()
def greedy_head_ranking(
    model: PlanarityTransformer,
    clean_adjacency: Float[Tensor, "graph vertex vertex"],
    corrupted_adjacency: Float[Tensor, "graph vertex vertex"],
    n_steps: int | None = None,
) -> pd.DataFrame:
    """Rank heads by activation patching, greedily: at each step, add the head that restores the most.

    Starting from the corrupted run, each step tries patching every head not chosen yet (together
    with the heads chosen so far) with its clean output, keeps the best one, and records the
    normalised recovery of the logit difference (:func:`normalised_recovery`).
    """
    clean_logits, clean_cache = model.run_with_cache(clean_adjacency)
    corrupted_logits = model(corrupted_adjacency)
    candidates = [(layer, head) for layer in range(model.cfg.n_layers) for head in range(model.cfg.n_heads)]
    chosen: list[tuple[int, int]] = []
    rows = []
    for step in range(n_steps or len(candidates)):
        scores = {
            candidate: normalised_recovery(
                patch_heads(model, corrupted_adjacency, clean_cache, [*chosen, candidate]), clean_logits, corrupted_logits
            )
            for candidate in candidates if candidate not in chosen
        }
        best = max(scores, key=scores.get)
        chosen.append(best)
        rows.append({"step": step + 1, "head added": f"{best[0]}.{best[1]}", "recovery": scores[best]})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------------
# Path patching into the query and key of a layer-1 head


def pattern_distance_metric(
    patched_pattern: Float[Tensor, "graph query_vertex key_vertex"],
    clean_pattern: Float[Tensor, "graph query_vertex key_vertex"],
    corrupted_pattern: Float[Tensor, "graph query_vertex key_vertex"],
) -> float:
    """How far a patched pattern is from the clean one: 1 = no better than corrupted, 0 = clean restored.

    Per graph, ``‖patched − clean‖ / ‖corrupted − clean‖`` (Frobenius norms), then the mean.
    """
    distance = torch.linalg.matrix_norm(patched_pattern - clean_pattern)
    baseline = torch.linalg.matrix_norm(corrupted_pattern - clean_pattern)
    return (distance / baseline).mean().item()


@dataclass
class PathPatchingSetup:
    """Clean and corrupted layer-0 components for path patching into a layer-1 head."""

    model: PlanarityTransformer
    head: int
    clean_components: Float[Tensor, "component graph vertex d_model"]
    corrupted_components: Float[Tensor, "component graph vertex d_model"]
    clean_pattern: Float[Tensor, "graph query_vertex key_vertex"]
    corrupted_pattern: Float[Tensor, "graph query_vertex key_vertex"]

    @property
    def component_names(self) -> list[str]:
        return layer0_component_names(self.model)

    def mask(self, components: Sequence[str]) -> Bool[Tensor, "component"]:
        """A boolean mask over :attr:`component_names` for the named components."""
        unknown = set(components) - set(self.component_names)
        if unknown:
            raise ValueError(f"unknown components {sorted(unknown)}; choose from {self.component_names}")
        return torch.tensor([name in components for name in self.component_names])

    def resid(self, components: Sequence[str]) -> Float[Tensor, "graph vertex d_model"]:
        return rebuild_resid_pre_1(self.model, self.clean_components, self.corrupted_components, self.mask(components))

    def pattern(self, query_components: Sequence[str], key_components: Sequence[str]) -> Float[Tensor, "graph q k"]:
        """Layer-1 pattern when the paths from ``query_components`` to the query (and ``key_components`` to the key) are clean."""
        return attention_pattern_from_resid(
            self.model, 1, self.head, self.resid(query_components), self.resid(key_components)
        )

    def metric(self, query_components: Sequence[str], key_components: Sequence[str]) -> float:
        """:func:`pattern_distance_metric` of :meth:`pattern` (1 = corrupted, 0 = clean)."""
        return pattern_distance_metric(self.pattern(query_components, key_components), self.clean_pattern, self.corrupted_pattern)


@torch.no_grad()
def path_patching_setup(
    model: PlanarityTransformer,
    head: int,
    clean_adjacency: Float[Tensor, "graph vertex vertex"],
    corrupted_adjacency: Float[Tensor, "graph vertex vertex"],
) -> PathPatchingSetup:
    """Run the clean and corrupted graphs and collect what path patching into head ``1.head`` needs."""
    check_layer_and_head(model, 1, head)
    _, clean_cache = model.run_with_cache(clean_adjacency)
    _, corrupted_cache = model.run_with_cache(corrupted_adjacency)
    return PathPatchingSetup(
        model=model, head=head,
        clean_components=layer0_components(model, clean_cache),
        corrupted_components=layer0_components(model, corrupted_cache),
        clean_pattern=clean_cache["pattern", 1][:, head],
        corrupted_pattern=corrupted_cache["pattern", 1][:, head],
    )


@torch.no_grad()
def exhaustive_path_patching(setup: PathPatchingSetup, chunk: int = 32) -> pd.DataFrame:
    """The metric for every pair (subset patched into the query, subset patched into the key).

    With ``n`` components that is ``2^n x 2^n`` configurations (262,144 for embed + 8 heads). The
    queries and keys of every subset are computed once, then all pairs are scored in chunks.
    Returns one row per configuration: ``query`` and ``key`` (tuples of component names),
    ``n patched`` (their total size) and ``metric``.
    """
    model, names = setup.model, setup.component_names
    attention = model.blocks[1].attn
    bits = torch.arange(2 ** len(names))
    masks = ((bits[:, None] >> torch.arange(len(names))) & 1).bool()  # [subset, component]: bit i = component i
    queries, keys = [], []
    for mask in masks:
        resid = rebuild_resid_pre_1(model, setup.clean_components, setup.corrupted_components, mask)
        queries.append(resid @ attention.W_Q[setup.head] + attention.b_Q[setup.head])
        keys.append(resid @ attention.W_K[setup.head] + attention.b_K[setup.head])
    query_stack, key_stack = torch.stack(queries), torch.stack(keys)  # [subset, graph, vertex, d_head]
    baseline = torch.linalg.matrix_norm(setup.corrupted_pattern - setup.clean_pattern)  # [graph]
    metrics = torch.empty(len(masks), len(masks))
    scale = 1 / math.sqrt(model.cfg.d_head)
    for start in range(0, len(masks), chunk):
        scores = torch.einsum("qgvd,kgwd->qkgvw", query_stack[start:start + chunk], key_stack) * scale
        patterns = scores.softmax(dim=-1)
        distance = torch.linalg.matrix_norm(patterns - setup.clean_pattern)  # [q_subset, k_subset, graph]
        metrics[start:start + chunk] = (distance / baseline).mean(dim=-1)
    subsets = [tuple(name for name, bit in zip(names, mask.tolist()) if bit) for mask in masks]
    sizes = masks.sum(dim=1)
    return pd.DataFrame({
        "query": [subset for subset in subsets for _ in subsets],
        "key": [subset for _ in subsets for subset in subsets],
        "n patched": (sizes[:, None] + sizes[None, :]).flatten().numpy(),
        "metric": metrics.flatten().numpy(),
    })


def best_by_size(results: pd.DataFrame) -> pd.DataFrame:
    """For each number of patched paths, the configuration with the lowest metric."""
    best = results.loc[results.groupby("n patched")["metric"].idxmin()]
    return best.assign(
        query=best["query"].map(lambda subset: " + ".join(subset) or "-"),
        key=best["key"].map(lambda subset: " + ".join(subset) or "-"),
    ).reset_index(drop=True)


# --------------------------------------------------------------------------------------------
# Decomposing a layer-1 head's query and key


def residual_components(
    model: PlanarityTransformer, cache: ActivationCache, n_layers: int | None = None
) -> tuple[list[str], Float[Tensor, "component graph vertex d_model"]]:
    """The residual stream before block ``n_layers`` (default: the final one) split into what wrote it.

    Components: ``embed``, ``pos``, then for each block ``L.h`` (each head), ``bias L`` (the attention
    output bias) and ``MLP L``. They add up exactly to ``cache["resid_pre", n_layers]`` (or to the
    final residual stream); ``n_layers=1`` gives what layer 1 reads.
    """
    n_layers = model.cfg.n_layers if n_layers is None else n_layers
    n_graphs = cache["hook_embed"].shape[0]
    names, parts = ["embed", "pos"], [cache["hook_embed"], cache["hook_pos_embed"].expand(n_graphs, -1, -1)]
    for layer in range(n_layers):
        names += [*head_names(model, layer), f"bias {layer}", f"MLP {layer}"]
        parts += [*head_results(model, cache, layer).unbind(dim=2), model.blocks[layer].attn.b_O.expand_as(cache["hook_embed"]),
                  cache["mlp_out", layer]]
    return names, torch.stack(parts)


def decompose_scores(
    query_parts: Float[Tensor, "component graph vertex d_head"],
    key_parts: Float[Tensor, "component graph vertex d_head"],
    d_head: int,
) -> Float[Tensor, "query_component key_component graph query_vertex key_vertex"]:
    """Attention scores split by (query component, key component); they sum to the full scores."""
    return torch.einsum("cgvd,egwd->cegvw", query_parts, key_parts) / math.sqrt(d_head)


# --------------------------------------------------------------------------------------------
# Composition scores


def composition_score(
    writer: Float[Tensor, "d_in d_model"], reader: Float[Tensor, "d_model d_out"]
) -> float:
    """``‖W_writer W_reader‖_F / (‖W_writer‖_F ‖W_reader‖_F)``: how much of what one writes the other reads.

    1 would mean perfect alignment; for random matrices it is small (see :func:`random_composition_scores`).
    """
    return (torch.linalg.matrix_norm(writer @ reader)
            / (torch.linalg.matrix_norm(writer) * torch.linalg.matrix_norm(reader))).item()


@torch.no_grad()
def composition_scores(model: PlanarityTransformer) -> dict[str, Float[Tensor, "writer reader_head"]]:
    """Q-, K- and V-composition scores of each layer-0 writer (embed, pos, each head's OV) with each layer-1 head.

    Writers: ``W_E``, ``W_pos`` and ``W_V W_O`` of each layer-0 head. Readers: layer-1
    ``W_Q W_K^T`` (Q), ``W_K W_Q^T`` (K) and ``W_V W_O`` (V). MLP0 sits between them and is ignored
    here, so these scores only see the direct paths.
    """
    writers = [model.W_E, model.W_pos, *(model.W_V[0] @ model.W_O[0]).unbind(0)]
    readers = {
        "Q": model.W_Q[1] @ model.W_K[1].transpose(-1, -2),
        "K": model.W_K[1] @ model.W_Q[1].transpose(-1, -2),
        "V": model.W_V[1] @ model.W_O[1],
    }
    return {
        kind: torch.tensor([[composition_score(writer, reader[head]) for head in range(model.cfg.n_heads)] for writer in writers])
        for kind, reader in readers.items()
    }


@torch.no_grad()
def random_composition_scores(
    writer_rank: int, reader_rank: int, d_model: int, n_samples: int = 200, seed: int = 0
) -> np.ndarray:
    """Composition scores of random Gaussian matrices shaped like a writer and a reader: the baseline.

    The writer is ``[writer_rank, d_model]``: its rows span as many directions as ``W_E`` (10 rows)
    or a head's ``W_V W_O`` (rank ``d_head``). The reader is ``A B^T`` with ``A, B`` of shape
    ``[d_model, reader_rank]``, like ``W_Q W_K^T``.
    """
    generator = torch.Generator().manual_seed(seed)
    scores = []
    for _ in range(n_samples):
        writer = torch.randn(writer_rank, d_model, generator=generator)
        reader = torch.randn(d_model, reader_rank, generator=generator) @ torch.randn(reader_rank, d_model, generator=generator)
        scores.append(composition_score(writer, reader))
    return np.array(scores)
