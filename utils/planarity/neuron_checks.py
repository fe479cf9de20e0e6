"""Self-checks for the exercises of notebook 1.3 (zooming in: weights, degree, neurons, logits)."""

from __future__ import annotations

from typing import Callable

import torch
from jaxtyping import Float
from torch import Tensor

from utils.planarity import neurons
from utils.selfcheck import assert_tensors_close, call_learner, passed


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
    toy = torch.stack([2 * toy_degree + 1, -toy_degree, torch.randn(6, 10, generator=generator), toy_degree ** 2], dim=-1)
    for where, case_activations, case_degree in [("planted neurons (2d+1, -d, noise, d²)", toy, toy_degree),
                                                  ("the model's neurons", activations, degree)]:
        expected = neurons.neuron_degree_correlation(case_activations, case_degree)
        actual = call_learner(correlation, case_activations.clone(), case_degree.clone())
        assert_tensors_close(
            f"neuron_degree_correlation on {where}", actual, expected, atol=1e-4,
            hint="Flatten graphs and vertices into one axis, centre each neuron's activations and the degrees, and "
            "divide the summed product by the product of their norms. 2d+1 must give +1 and -d give -1.",
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
