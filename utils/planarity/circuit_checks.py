"""Self-checks for the exercises of notebook 1.2 (finding the circuit).

Each ``check_*`` runs the learner's function on small hand-made cases and on the real model's
tensors, and compares it with the reference in :mod:`utils.planarity.circuit` (or here).
"""

from __future__ import annotations

from typing import Callable

import torch
from jaxtyping import Float
from torch import Tensor

from utils.planarity.circuit import composition_score, normalised_recovery, pattern_distance_metric
from utils.selfcheck import assert_float_close, assert_tensors_close, call_learner, passed


def reference_neighbour_attention(
    patterns: Float[Tensor, "graph layer head query_vertex key_vertex"], adjacency: Float[Tensor, "graph vertex vertex"]
) -> Float[Tensor, "layer head"]:
    """Fraction of each head's attention that goes to neighbours of the query vertex (mean over graphs and queries)."""
    return (patterns * adjacency[:, None, None]).sum(dim=-1).mean(dim=(0, -1))


def _random_patterns(generator: torch.Generator, shape: tuple[int, ...]) -> Tensor:
    return torch.randn(shape, generator=generator).mul(2).softmax(dim=-1)


def check_neighbour_attention(
    neighbour_attention: Callable[[Tensor, Tensor], Tensor],
    patterns: Float[Tensor, "graph layer head query_vertex key_vertex"],
    adjacency: Float[Tensor, "graph vertex vertex"],
) -> None:
    """``neighbour_attention(patterns, adjacency)`` -> ``[layer, head]`` fractions of attention on neighbours."""
    path = torch.zeros(1, 4, 4)
    for vertex in range(3):
        path[0, vertex, vertex + 1] = path[0, vertex + 1, vertex] = 1
    uniform = torch.full((1, 1, 1, 4, 4), 0.25)
    cases = [
        ("uniform attention on the path 0-1-2-3", uniform, path),
        ("random patterns on the path 0-1-2-3", _random_patterns(torch.Generator().manual_seed(0), (1, 2, 3, 4, 4)), path),
        ("the model's patterns", patterns, adjacency),
    ]
    for where, case_patterns, case_adjacency in cases:
        expected = reference_neighbour_attention(case_patterns, case_adjacency)
        actual = call_learner(neighbour_attention, case_patterns.clone(), case_adjacency.clone())
        assert_tensors_close(
            f"neighbour_attention on {where}", actual, expected, atol=1e-5,
            hint="For each query vertex, add up the attention it pays to its neighbours (adjacency row as a mask), "
            "then average over query vertices and graphs. Uniform attention on the path gives 1.5 / 4 = 0.375.",
        )
    passed("neighbour_attention")


def check_normalised_recovery(normalised_recovery_fn: Callable[[Tensor, Tensor, Tensor], float]) -> None:
    """``normalised_recovery(patched, clean, corrupted)``: 0 = corrupted, 1 = clean, from mean logit differences."""
    generator = torch.Generator().manual_seed(1)
    clean = torch.randn(6, 2, generator=generator) + torch.tensor([0.0, 3.0])
    corrupted = torch.randn(6, 2, generator=generator) + torch.tensor([3.0, 0.0])
    halfway = (clean + corrupted) / 2
    cases = [("patched = clean", clean), ("patched = corrupted", corrupted), ("halfway", halfway),
             ("random logits", torch.randn(6, 2, generator=generator) * 3)]
    for where, patched in cases:
        expected = normalised_recovery(patched, clean, corrupted)
        actual = call_learner(normalised_recovery_fn, patched.clone(), clean.clone(), corrupted.clone())
        assert_float_close(
            f"normalised_recovery({where})", actual, expected,
            hint="Average the (planar - non-planar) logit difference over graphs for each run, then compute "
            "(patched - corrupted) / (clean - corrupted), and return a Python float (.item()).",
        )
    passed("normalised_recovery")


def check_pattern_distance_metric(
    metric: Callable[[Tensor, Tensor, Tensor], float],
    clean_pattern: Float[Tensor, "graph q k"],
    corrupted_pattern: Float[Tensor, "graph q k"],
) -> None:
    """``metric(patched, clean, corrupted)``: mean over graphs of ``‖patched − clean‖ / ‖corrupted − clean‖``."""
    generator = torch.Generator().manual_seed(2)
    other = _random_patterns(generator, tuple(clean_pattern.shape))
    cases = [("patched = clean", clean_pattern), ("patched = corrupted", corrupted_pattern),
             ("a random pattern", other), ("halfway", (clean_pattern + corrupted_pattern) / 2)]
    for where, patched in cases:
        expected = pattern_distance_metric(patched, clean_pattern, corrupted_pattern)
        actual = call_learner(metric, patched.clone(), clean_pattern.clone(), corrupted_pattern.clone())
        assert_float_close(
            f"pattern_distance_metric({where})", actual, expected,
            hint="For each graph take the Frobenius norm of (patched - clean) divided by that of (corrupted - clean), "
            "then average over graphs (the mean of ratios, not the ratio of means), and return a Python float.",
        )
    passed("pattern_distance_metric")


def check_composition_score(composition_score_fn: Callable[[Tensor, Tensor], float], writer: Tensor, reader: Tensor) -> None:
    """``composition_score(writer, reader)`` = ``‖writer @ reader‖_F / (‖writer‖_F ‖reader‖_F)``."""
    generator = torch.Generator().manual_seed(3)
    direction = torch.randn(1, 8, generator=generator)
    cases = [
        ("a writer and a reader that share one direction", direction, direction.T @ direction),
        ("orthogonal writer and reader", torch.eye(8)[:2], torch.eye(8)[:, 4:] @ torch.eye(8)[4:]),
        ("random matrices", torch.randn(5, 8, generator=generator), torch.randn(8, 8, generator=generator)),
        ("the model's weights", writer, reader),
    ]
    for where, case_writer, case_reader in cases:
        expected = composition_score(case_writer, case_reader)
        actual = call_learner(composition_score_fn, case_writer.clone(), case_reader.clone())
        assert_float_close(
            f"composition_score on {where}", actual, expected,
            hint="Use Frobenius norms (torch.linalg.matrix_norm) of writer @ reader, writer and reader, and return "
            "a Python float.",
        )
    passed("composition_score")


def check_rebuild_resid_pre_1(
    rebuild: Callable[..., Tensor],
    model: torch.nn.Module,
    clean_components: Float[Tensor, "component graph vertex d_model"],
    corrupted_components: Float[Tensor, "component graph vertex d_model"],
) -> None:
    """``rebuild(model, clean_components, corrupted_components, patched)``: the residual stream before layer 1."""
    from utils.planarity.circuit import rebuild_resid_pre_1

    n_components = clean_components.shape[0]
    masks = [torch.zeros(n_components, dtype=torch.bool), torch.ones(n_components, dtype=torch.bool),
             torch.arange(n_components) % 2 == 0, torch.arange(n_components) == 0]
    for mask in masks:
        expected = rebuild_resid_pre_1(model, clean_components, corrupted_components, mask)
        actual = call_learner(rebuild, model, clean_components.clone(), corrupted_components.clone(), mask.clone())
        patched = [index for index, bit in enumerate(mask.tolist()) if bit]
        assert_tensors_close(
            f"rebuild_resid_pre_1 with components {patched} patched", actual, expected, atol=1e-4,
            hint="Take each component from the clean run where patched is True and from the corrupted run otherwise, "
            "add them up with model.W_pos and layer 0's output bias model.blocks[0].attn.b_O, then add "
            "model.blocks[0].mlp of that sum (the MLP reads the mixed stream).",
        )
    passed("rebuild_resid_pre_1")
