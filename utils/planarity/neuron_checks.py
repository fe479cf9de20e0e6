"""Self-checks for the exercises of notebook 1.3 (zooming in: weights, degree, neurons, logits)."""

from __future__ import annotations

from typing import Callable

import torch
from jaxtyping import Float
from torch import Tensor

from utils.planarity import neurons
from utils.selfcheck import SelfCheckFailed, assert_tensors_close, call_learner, passed


def check_qk_term(qk_term: Callable[..., Tensor], model: torch.nn.Module) -> None:
    """``qk_term(query_input, key_input, W_Q, W_K)`` = ``(query_input W_Q)(key_input W_K)^T / sqrt(d_head)``."""
    generator = torch.Generator().manual_seed(0)
    attention = model.blocks[0].attn
    cases = [
        ("random inputs of different lengths", torch.randn(3, 8, generator=generator), torch.randn(5, 8, generator=generator),
         torch.randn(8, 4, generator=generator), torch.randn(8, 4, generator=generator)),
        ("W_pos against W_E, head 0.0", model.W_pos, model.W_E, attention.W_Q[0], attention.W_K[0]),
    ]
    for where, query_input, key_input, W_Q, W_K in cases:
        expected = neurons.qk_term(query_input, key_input, W_Q, W_K)
        actual = call_learner(qk_term, query_input.clone(), key_input.clone(), W_Q.clone(), W_K.clone())
        assert_tensors_close(
            f"qk_term on {where}", actual, expected, atol=1e-4,
            hint="Project the query rows with W_Q and the key rows with W_K, take all dot products "
            "(queries @ keys.T: shape [query rows, key rows]) and divide by sqrt(d_head) = sqrt(W_Q.shape[-1]).",
        )
    passed("qk_term")


def check_neuron_degree_correlation(
    correlation: Callable[[Tensor, Tensor], Tensor],
    activations: Float[Tensor, "graph vertex neuron"],
    degree: Float[Tensor, "graph vertex"],
) -> None:
    """``correlation(activations, degree)``: one Pearson correlation per neuron over all (graph, vertex) pairs."""
    generator = torch.Generator().manual_seed(1)
    toy_degree = torch.randint(0, 9, (6, 10), generator=generator).float()
    toy = torch.stack([2 * toy_degree + 1, -toy_degree, torch.randn(6, 10, generator=generator), toy_degree ** 2,
                       torch.zeros(6, 10)], dim=-1)
    for where, case_activations, case_degree in [("planted neurons (2d+1, -d, noise, d², a dead neuron)", toy, toy_degree),
                                                  ("the model's neurons", activations, degree)]:
        expected = neurons.neuron_degree_correlation(case_activations, case_degree)
        actual = call_learner(correlation, case_activations.clone(), case_degree.clone())
        assert_tensors_close(
            f"neuron_degree_correlation on {where}", actual, expected, atol=1e-4,
            hint="Flatten graphs and vertices into one axis, centre each neuron's activations and the degrees, and "
            "divide the summed product by the product of their norms. 2d+1 must give +1 and -d give -1, and a neuron "
            "that never varies must give 0, not NaN.",
        )
    passed("neuron_degree_correlation")


def check_direct_logit_attribution(
    attribution: Callable[..., Tensor], model: torch.nn.Module, components: Float[Tensor, "component graph vertex d_model"]
) -> None:
    """``attribution(model, components)``: each component's vertex-mean times ``W_U[:, 1] - W_U[:, 0]``."""
    generator = torch.Generator().manual_seed(2)
    cases = [("random components", torch.randn(3, 4, 10, model.cfg.d_model, generator=generator)),
             ("the model's components", components)]
    for where, case_components in cases:
        expected = neurons.direct_logit_attribution(model, case_components)
        actual = call_learner(attribution, model, case_components.clone())
        assert_tensors_close(
            f"direct_logit_attribution on {where}", actual, expected, atol=1e-3,
            hint="The model averages the final residual stream over the vertices before W_U, so average each component "
            "over its vertex axis, then dot it with W_U[:, PLANAR] - W_U[:, 1 - PLANAR]. Shape [component, graph].",
        )
    passed("direct_logit_attribution")


def check_neuron_logit_attribution(attribution: Callable[..., Tensor], model: torch.nn.Module, cache) -> None:
    """``attribution(model, cache, layer)``: each neuron's direct effect on the logit difference, ``[graph, neuron]``."""
    for layer in range(model.cfg.n_layers):
        expected = neurons.neuron_logit_attribution(model, cache, layer)
        actual = call_learner(attribution, model, cache, layer)
        assert_tensors_close(
            f"neuron_logit_attribution for layer {layer}", actual, expected, atol=1e-3,
            hint="Neuron n writes post[..., n] * W_out[layer][n] into every vertex; average its activation over the "
            "vertices and multiply by W_out[layer][n] · (W_U[:, PLANAR] - W_U[:, 1 - PLANAR]).",
        )
    passed("neuron_logit_attribution")


def _which_wrong(actual: object, candidates: dict[str, Tensor], atol: float) -> str:
    """The hint for the first typical wrong answer that ``actual`` matches, or ``""``."""
    for hint, wrong in candidates.items():
        if isinstance(actual, Tensor) and actual.shape == wrong.shape and torch.allclose(actual.float(), wrong.float(), atol=atol):
            return hint
    return ""


def _unpack_pair(name: str, result: object) -> tuple[object, object]:
    if not isinstance(result, tuple) or len(result) != 2:
        raise SelfCheckFailed(f"{name} should return a tuple of two things, got {type(result).__name__}.")
    return result


def check_ridge_degree_probe(
    ridge_degree_probe: Callable[..., tuple[Tensor, float]],
    resid: Float[Tensor, "graph vertex d_model"],
    degree: Float[Tensor, "graph vertex"],
) -> None:
    """``ridge_degree_probe(resid, degree, ridge)`` -> ``(w, b)``: closed-form ridge, bias not penalised."""
    from utils.planarity import mechanism

    features = resid.reshape(-1, resid.shape[-1]).double()
    target = degree.reshape(-1).double()
    design = torch.cat([features, torch.ones(len(features), 1, dtype=features.dtype)], dim=1)
    for ridge in (100.0, 1.0, 0.0):
        expected_w, expected_b = mechanism.ridge_degree_probe(resid, degree, ridge)
        actual_w, actual_b = _unpack_pair("ridge_degree_probe", call_learner(ridge_degree_probe, resid.clone(), degree.clone(), ridge))
        if ridge == 0:
            # the minimum-norm solution is unique; compare what it predicts and its norm
            if not isinstance(actual_w, Tensor) or actual_w.shape != expected_w.shape or torch.isnan(actual_w).any():
                raise SelfCheckFailed(f"ridge_degree_probe with ridge=0 should return w of shape {tuple(expected_w.shape)} without NaN.")
            predicted = resid.reshape(-1, resid.shape[-1]) @ actual_w.float() + float(actual_b)
            reference = resid.reshape(-1, resid.shape[-1]) @ expected_w + expected_b
            assert_tensors_close(
                "ridge_degree_probe(ridge=0)'s predictions", predicted, reference, atol=1e-2,
                hint="With ridge = 0 the Gram matrix is singular here (this residual stream spans fewer than d_model "
                "directions), so torch.linalg.solve cannot be used: take the minimum-norm least-squares solution of the "
                "centred problem, torch.linalg.pinv(centred) @ centred_target.",
            )
            if abs(actual_w.norm().item() - expected_w.norm().item()) > 0.02 * expected_w.norm().item():
                raise SelfCheckFailed(
                    f"ridge_degree_probe(ridge=0) fits, but |w| = {actual_w.norm():.3f}, expected the minimum norm "
                    f"{expected_w.norm():.3f}: use torch.linalg.pinv on the centred features."
                )
            continue
        penalised_bias = torch.linalg.solve(design.T @ design + ridge * torch.eye(design.shape[1], dtype=design.dtype),
                                            design.T @ target)[:-1]
        no_bias = torch.linalg.solve(features.T @ features + ridge * torch.eye(features.shape[1], dtype=features.dtype),
                                     features.T @ target)
        centred = features - features.mean(dim=0)
        scaled_ridge = torch.linalg.solve(centred.T @ centred / len(features) + ridge * torch.eye(features.shape[1], dtype=features.dtype),
                                          centred.T @ (target - target.mean()) / len(features))
        hint = _which_wrong(actual_w, {
            "You penalised the bias too (a column of ones inside the ridge): centre the features and the degrees, "
            "solve for w alone, then set b = mean(degree) - mean(resid) @ w.": penalised_bias,
            "You fitted without a bias (features not centred): centre the features and the degrees first.": no_bias,
            "You divided the squared error by the number of rows: the objective is the plain sum, "
            "Σ (x·w + b − degree)² + ridge·|w|², so the Gram matrix is X_cᵀ X_c + ridge·I.": scaled_ridge,
        }, atol=1e-3) or (
            "Centre the features X and the degrees y; w = (X_cᵀ X_c + ridge·I)⁻¹ X_cᵀ y_c; b = mean(y) − mean(X) @ w."
        )
        assert_tensors_close(f"ridge_degree_probe's w with ridge={ridge}", actual_w, expected_w, atol=1e-3, hint=hint)
        if not abs(float(actual_b) - expected_b) <= 1e-3 * max(1.0, abs(expected_b)):
            raise SelfCheckFailed(
                f"ridge_degree_probe's b with ridge={ridge} is {float(actual_b):.4f}, expected {expected_b:.4f}: "
                "b = mean(degree) − mean(resid) @ w."
            )
    passed("ridge_degree_probe")


def check_steer_vertex(steer_vertex: Callable[..., tuple[Tensor, Tensor]], model: torch.nn.Module,
                       adjacency: Float[Tensor, "graph vertex vertex"]) -> None:
    """``steer_vertex(model, adjacency, vertices, vector, hook_name)`` -> (logit difference, attention received)."""
    from utils.planarity import mechanism
    from utils.planarity.model import NON_PLANAR, PLANAR

    generator = torch.Generator().manual_seed(3)
    vertices = torch.randint(0, adjacency.shape[-1], (len(adjacency),), generator=generator)
    vector = torch.randn(model.cfg.d_model, generator=generator) * 2
    hook_name = "blocks.0.hook_resid_post"
    expected_ld, expected_attention = mechanism.steer_vertex(model, adjacency, vertices, vector, hook_name)

    def everywhere(resid, hook):
        return resid + vector

    logits, cache = model.run_with_cache(adjacency, names_filter="blocks.1.attn.hook_pattern")
    clean_pattern = cache["blocks.1.attn.hook_pattern"]
    all_logits = model.run_with_hooks(adjacency, fwd_hooks=[(hook_name, everywhere)])
    _, steered_cache = _cached_with_hook(model, adjacency, hook_name, vertices, vector)
    pattern = steered_cache["blocks.1.attn.hook_pattern"]
    rows = torch.arange(len(adjacency))
    wrong_ld = {
        "Your logit difference is unchanged by the vector: add it inside a hook on hook_name and return the edited "
        "activation from the hook.": logits[:, PLANAR] - logits[:, NON_PLANAR],
        "You added the vector to every vertex: add it only at vertices[g] of graph g (resid[rows, vertices] += vector).":
            all_logits[:, PLANAR] - all_logits[:, NON_PLANAR],
        "Your logit difference has the wrong sign: it is logit[PLANAR] − logit[NON_PLANAR].":
            -(expected_ld),
    }
    wrong_attention = {
        "You averaged over all 10 queries: leave out the steered vertex's own query (9 others).":
            pattern[rows, :, :, vertices].mean(dim=-1),
        "You took the attention the steered vertex *pays* (its query row): take what the others pay *to* it "
        "(the key column, pattern[g, head, :, v]).": mechanism.attention_received(pattern.transpose(-1, -2), vertices),
        "Your attention is from the clean run: record layer 1's pattern in the same run as the steering hook.":
            mechanism.attention_received(clean_pattern, vertices),
    }
    for where, vec in (("a random vector", vector), ("a zero vector", torch.zeros_like(vector))):
        if where == "a zero vector":
            ref_ld, ref_attention = mechanism.steer_vertex(model, adjacency, vertices, vec, hook_name)
        else:
            ref_ld, ref_attention = expected_ld, expected_attention
        actual = _unpack_pair("steer_vertex", call_learner(steer_vertex, model, adjacency.clone(), vertices.clone(), vec.clone(), hook_name))
        actual_ld, actual_attention = actual
        hint = _which_wrong(actual_ld, wrong_ld, atol=1e-3) if where != "a zero vector" else ""
        assert_tensors_close(f"steer_vertex's logit difference with {where}", actual_ld, ref_ld, atol=1e-3,
                             hint=hint or "Hook hook_name, clone the residual stream, add the vector at [rows, vertices], "
                             "return it; the logit difference is logits[:, PLANAR] − logits[:, NON_PLANAR].")
        hint = _which_wrong(actual_attention, wrong_attention, atol=1e-5)
        assert_tensors_close(f"steer_vertex's attention with {where}", actual_attention, ref_attention, atol=1e-5,
                             hint=hint or "Record blocks.1.attn.hook_pattern ([graph, head, query, key]) in the same run; "
                             "for graph g take the key column vertices[g] and average it over the 9 other queries.")
    passed("steer_vertex")


def _cached_with_hook(model, adjacency, hook_name, vertices, vector):
    rows = torch.arange(len(adjacency))

    def add(resid, hook):
        resid = resid.clone()
        resid[rows, vertices] += vector
        return resid

    with model.hooks(fwd_hooks=[(hook_name, add)]):
        return model.run_with_cache(adjacency, names_filter="blocks.1.attn.hook_pattern")
