"""Self-checks for the exercises of notebook 1.2 (finding the circuit).

Each ``check_*`` runs the learner's function on small hand-made cases and on the real model's
tensors, and compares it with the reference in :mod:`utils.planarity.circuit` (or here).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import torch
from jaxtyping import Float
from torch import Tensor

from utils.planarity.circuit import composition_score, normalised_recovery, pattern_distance_metric
if TYPE_CHECKING:
    from transformer_lens import ActivationCache

from utils.selfcheck import SelfCheckFailed, assert_float_close, assert_tensors_close, call_learner, passed


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


# --------------------------------------------------------------------------------------------
# The craft exercises: ablation, patching, greedy search, faithfulness


def _head_pairs(heads: list[str]) -> list[tuple[int, int]]:
    return [tuple(int(part) for part in name.split(".")) for name in heads]  # type: ignore[misc]


def _which_wrong(actual: Tensor, candidates: dict[str, Tensor], atol: float = 1e-4) -> str:
    """The hint for the first typical wrong answer that ``actual`` matches, or ``""``."""
    for hint, wrong in candidates.items():
        if isinstance(actual, Tensor) and actual.shape == wrong.shape and torch.allclose(actual.float(), wrong, atol=atol):
            return hint
    return ""


def check_mean_ablated_logits(
    mean_ablated_logits: Callable[..., Tensor],
    model: torch.nn.Module,
    adjacency: Float[Tensor, "graph vertex vertex"],
    reference_adjacency: Float[Tensor, "reference vertex vertex"],
) -> None:
    """``mean_ablated_logits(model, adjacency, heads, reference_cache)``: logits with ``heads`` mean-ablated.

    Each ablated head's ``z`` becomes its mean over the reference graphs (whose cache is
    ``reference_cache``), per vertex position.
    """
    from utils import causal

    names = causal.head_names(model)
    _, reference = model.run_with_cache(reference_adjacency)
    own = causal.reference_cache(model, adjacency, names)
    for heads in (["0.0"], ["1.2", "0.7"], ["0.3", "0.6", "1.5"], []):
        expected = causal.run_with_ablation(model, adjacency, heads, reference, "mean", per_position=True)
        actual = call_learner(mean_ablated_logits, model, adjacency.clone(), list(heads), reference)
        layers = sorted({name.split(".")[0] for name in heads})
        wrong = {
            "You replaced z by zeros: use its mean over the reference graphs (cache them, then .mean(dim=0)).":
                causal.run_with_ablation(model, adjacency, heads, reference, "zero"),
            "Your means come from the graphs being evaluated: take them from reference_cache instead.":
                causal.run_with_ablation(model, adjacency, heads, own, "mean"),
            "You averaged over vertex positions too: average over graphs only (dim 0), one mean per position.":
                causal.run_with_ablation(model, adjacency, heads, reference, "mean", per_position=False),
            "You ablated every head of the layer: replace only z[:, :, head] for the heads named.":
                causal.run_with_ablation(model, adjacency, [f"{layer}.{head}" for layer in layers for head in range(8)], reference),
        } if heads else {}
        hint = _which_wrong(actual, wrong) or (
            "Hook blocks.L.attn.hook_z, clone z, set z[:, :, h] to the reference mean of that head "
            "(shape [vertex, d_head]) and return it; pass all hooks to model.run_with_hooks at once."
        )
        assert_tensors_close(f"mean_ablated_logits with heads {heads} ablated", actual, expected, atol=1e-4, hint=hint)
    passed("mean_ablated_logits")


def check_patched_logits(
    patched_logits: Callable[..., Tensor],
    model: torch.nn.Module,
    clean_adjacency: Float[Tensor, "graph vertex vertex"],
    corrupted_adjacency: Float[Tensor, "graph vertex vertex"],
) -> None:
    """``patched_logits(model, corrupted_adjacency, clean_cache, heads)``: corrupted run, ``heads`` from the clean run."""
    from utils import causal

    _, clean_cache = model.run_with_cache(clean_adjacency)
    for heads in (["1.0"], ["0.0", "0.7"], ["1.0", "1.5", "0.2"], []):
        expected = causal.run_with_patch(model, corrupted_adjacency, heads, clean_cache)
        actual = call_learner(patched_logits, model, corrupted_adjacency.clone(), clean_cache, list(heads))
        layers = sorted({name.split(".")[0] for name in heads})
        wrong = {
            "You patched every head of the layer: set only z[:, :, head] to the clean value.":
                causal.run_with_patch(model, corrupted_adjacency, [f"{layer}.{head}" for layer in layers for head in range(8)], clean_cache),
            "Nothing changed: did your hook return the patched tensor, and did you run the corrupted graphs with it?":
                model(corrupted_adjacency),
        } if heads else {}
        hint = _which_wrong(actual, wrong) or (
            "Run the corrupted graphs with a hook on blocks.L.attn.hook_z that sets z[:, :, h] to "
            "clean_cache['z', L][:, :, h] for each patched head."
        )
        assert_tensors_close(f"patched_logits with heads {heads} patched", actual, expected, atol=1e-4, hint=hint)
    passed("patched_logits")


def check_greedy_head_search(
    greedy_head_search: Callable[..., list[tuple[str, float]]],
    model: torch.nn.Module,
    clean_adjacency: Float[Tensor, "graph vertex vertex"],
    corrupted_adjacency: Float[Tensor, "graph vertex vertex"],
    n_steps: int = 3,
) -> None:
    """``greedy_head_search(model, clean, corrupted, n_steps)`` -> ``[(head name, recovery), ...]`` in order of choice."""
    from utils.planarity.circuit import greedy_head_ranking

    expected = greedy_head_ranking(model, clean_adjacency, corrupted_adjacency, n_steps=n_steps)
    actual = call_learner(greedy_head_search, model, clean_adjacency.clone(), corrupted_adjacency.clone(), n_steps)
    if not isinstance(actual, (list, tuple)) or len(actual) != n_steps:
        raise SelfCheckFailed(
            f"greedy_head_search should return a list of {n_steps} (head name, recovery) pairs, got {actual!r:.200}."
        )
    for step, ((name, recovery), (_, row)) in enumerate(zip(actual, expected.iterrows()), start=1):
        if name != row["head added"]:
            raise SelfCheckFailed(
                f"At step {step} you chose head {name!r}, the reference chose {row['head added']!r}. At every step, try each "
                "head not chosen yet patched TOGETHER with the heads chosen so far, and keep the one with the largest recovery."
            )
        assert_float_close(f"greedy_head_search's recovery at step {step}", recovery, float(row["recovery"]), atol=1e-4,
                           hint="Score each candidate set with normalised_recovery(patched, clean, corrupted).")
    passed("greedy_head_search")


def check_circuit_faithfulness(
    circuit_faithfulness: Callable[..., tuple[float, float]],
    model: torch.nn.Module,
    adjacency: Float[Tensor, "graph vertex vertex"],
    labels: Tensor,
    reference_adjacency: Float[Tensor, "reference vertex vertex"],
) -> None:
    """``circuit_faithfulness(model, adjacency, labels, circuit, reference_cache)`` -> ``(accuracy, logit difference ratio)``.

    Every head outside ``circuit`` is mean-ablated (reference means per vertex position); the
    ratio is the mean signed logit difference of that run over the intact model's.
    """
    from utils import causal
    from utils.planarity.circuit import signed_logit_difference

    heads = causal.head_names(model)
    _, reference = model.run_with_cache(reference_adjacency)
    intact = signed_logit_difference(model(adjacency), labels).mean().item()
    for circuit_heads in (["0.0", "0.7", "1.2"], heads, ["1.0", "1.5"]):
        outside = [name for name in heads if name not in circuit_heads]
        logits = causal.run_with_ablation(model, adjacency, outside, reference, "mean")
        accuracy = (logits.argmax(-1) == labels).float().mean().item()
        ratio = signed_logit_difference(logits, labels).mean().item() / intact
        actual = call_learner(circuit_faithfulness, model, adjacency.clone(), labels.clone(), list(circuit_heads), reference)
        if not isinstance(actual, (tuple, list)) or len(actual) != 2:
            raise SelfCheckFailed(f"circuit_faithfulness should return (accuracy, logit difference ratio), got {actual!r:.200}.")
        inside = causal.run_with_ablation(model, adjacency, circuit_heads, reference, "mean")
        inside_ratio = signed_logit_difference(inside, labels).mean().item() / intact
        hint = ("You ablated the circuit itself: ablate every head that is NOT in the circuit."
                if isinstance(actual[1], float) and abs(actual[1] - inside_ratio) < 1e-4 and abs(inside_ratio - ratio) > 1e-3
                else "Mean-ablate every head outside the circuit (means over the reference graphs, per vertex position); the "
                "ratio divides the mean signed logit difference of that run by the intact model's.")
        assert_float_close(f"circuit_faithfulness({circuit_heads})'s accuracy", actual[0], accuracy, atol=1e-4, hint=hint)
        assert_float_close(f"circuit_faithfulness({circuit_heads})'s logit difference ratio", actual[1], ratio, atol=1e-3, hint=hint)
    passed("circuit_faithfulness")


def reference_worst_knockout(
    model: torch.nn.Module,
    adjacency: Float[Tensor, "graph vertex vertex"],
    labels: Tensor,
    circuit_heads: list[str],
    reference: "ActivationCache",
    max_size: int = 2,
) -> tuple[tuple[str, ...], float]:
    """The knock-out set K (a subset of ``circuit_heads``, 1 to ``max_size`` heads) with the largest completeness gap.

    The gap is ``|F(circuit minus K) - F(model minus K)|``, F the mean signed logit difference over
    the intact model's (heads mean-ablated per vertex position, reference means).
    """
    from itertools import combinations

    from utils import causal
    from utils.planarity.circuit import signed_logit_difference

    heads = causal.head_names(model)
    intact = signed_logit_difference(model(adjacency), labels).mean().item()

    def metric(logits: Tensor) -> float:
        return signed_logit_difference(logits, labels).mean().item() / intact

    gaps = {}
    for size in range(1, max_size + 1):
        for knocked_out in combinations(sorted(circuit_heads), size):
            in_circuit, in_model = causal.completeness_gap(model, adjacency, metric, circuit_heads, heads, knocked_out, reference)
            gaps[knocked_out] = abs(in_circuit - in_model)
    worst = max(gaps, key=gaps.get)
    return worst, gaps[worst]


def check_worst_knockout(
    worst_knockout: Callable[..., tuple[tuple[str, ...], float]],
    model: torch.nn.Module,
    adjacency: Float[Tensor, "graph vertex vertex"],
    labels: Tensor,
    reference_adjacency: Float[Tensor, "reference vertex vertex"],
) -> None:
    """``worst_knockout(model, adjacency, labels, circuit_heads, reference_cache, max_size)`` -> ``(K, gap)``."""
    _, reference = model.run_with_cache(reference_adjacency)
    for circuit_heads in (["0.0", "0.7", "1.2", "1.5"], ["0.0", "1.0", "1.2"]):
        expected_set, expected_gap = reference_worst_knockout(model, adjacency, labels, circuit_heads, reference)
        actual = call_learner(worst_knockout, model, adjacency.clone(), labels.clone(), list(circuit_heads), reference, 2)
        if not isinstance(actual, (tuple, list)) or len(actual) != 2:
            raise SelfCheckFailed(f"worst_knockout should return (knocked-out heads, gap), got {actual!r:.200}.")
        knocked_out, gap = actual
        if tuple(sorted(knocked_out)) != expected_set:
            raise SelfCheckFailed(
                f"For the circuit {circuit_heads} you found K = {tuple(sorted(knocked_out))}, the reference {expected_set} "
                f"(gap {expected_gap:.3f}). Try every subset of 1 and 2 circuit heads; for each, compare F(circuit minus K) "
                "(every head outside the circuit AND in K ablated) with F(model minus K) (only K ablated), and keep the "
                "largest absolute difference."
            )
        assert_float_close(f"worst_knockout's gap for the circuit {circuit_heads}", gap, expected_gap, atol=1e-3,
                           hint="The gap is |F(circuit minus K) - F(model minus K)|, F the signed logit difference ratio.")
    passed("worst_knockout")
