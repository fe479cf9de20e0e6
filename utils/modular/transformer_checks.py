"""Self-checks for notebook 3.3 (the course's transformer and TransformerLens 4's hook semantics).

Both checks run on the modular-addition model with the course's own transformer, so they work on
TransformerLens 3.9 and 4.x alike.
"""

from __future__ import annotations

from typing import Callable

import torch
from jaxtyping import Float, Int
from torch import Tensor

from utils.modular.data import all_pairs
from utils.selfcheck import SelfCheckFailed, assert_tensors_close, call_learner, passed


@torch.no_grad()
def reference_head_results(model, tokens: Int[Tensor, "batch 3"], layer: int = 0) -> Float[Tensor, "batch 3 head d_model"]:
    """What ``blocks.{layer}.attn.hook_result`` holds: each head's output ``z[h] @ W_O[h]``, no bias."""
    name = f"blocks.{layer}.attn.hook_result"
    model.set_use_attn_result(True)
    try:
        _, cache = model.run_with_cache(tokens, names_filter=name)
    finally:
        model.set_use_attn_result(False)
    return cache[name]


def check_head_results(
    head_results: Callable[[Tensor, Tensor], Tensor], model, n_inputs: int = 256
) -> None:
    """``head_results(z, W_O)`` must return each head's output ``[batch, pos, head, d_model]``,
    equal to what ``hook_result`` holds (checked on real activations and on random ones)."""
    tokens = all_pairs()[:: max(1, 12769 // n_inputs)][:n_inputs]
    _, cache = model.run_with_cache(tokens, names_filter="blocks.0.attn.hook_z")
    z = cache["blocks.0.attn.hook_z"]
    expected = reference_head_results(model, tokens)
    actual = call_learner(head_results, z.clone(), model.blocks[0].attn.W_O.detach().clone())
    hint = "Head h's output is z[:, :, h] @ W_O[h]: keep the head axis, sum only over d_head."
    if isinstance(actual, Tensor) and tuple(actual.shape) == tuple(expected.sum(2).shape):
        raise SelfCheckFailed(
            f"head_results returns shape {tuple(actual.shape)}: that is the sum over heads (attn_out without "
            f"b_O); keep one output per head, shape {tuple(expected.shape)}."
        )
    assert_tensors_close("head_results(z, W_O)", actual, expected, atol=1e-4, hint=hint)
    generator = torch.Generator().manual_seed(0)
    z_random = torch.randn(2, 5, 3, 4, generator=generator)
    w_random = torch.randn(3, 4, 6, generator=generator)
    expected_random = torch.stack([z_random[:, :, h] @ w_random[h] for h in range(3)], dim=2)
    assert_tensors_close(
        "head_results on random z [2, 5, 3, 4] and W_O [3, 4, 6]", call_learner(head_results, z_random, w_random),
        expected_random, atol=1e-4, hint=hint + " Read the sizes from the inputs, not from the model.",
    )
    passed("head_results")


def check_attention_scores(
    attention_scores: Callable[[Tensor, Tensor], Tensor], model, n_inputs: int = 256
) -> None:
    """``attention_scores(q, k)`` must return TransformerLens 3's ``hook_attn_scores``: ``q.k / sqrt(d_head)``
    per head, ``[batch, head, query, key]``, with ``-inf`` where a key comes after its query."""
    tokens = all_pairs()[:: max(1, 12769 // n_inputs)][:n_inputs]
    names = ["blocks.0.attn.hook_q", "blocks.0.attn.hook_k", "blocks.0.attn.hook_attn_scores"]
    _, cache = model.run_with_cache(tokens, names_filter=lambda name: name in names)
    q, k, expected = (cache[name] for name in names)
    actual = call_learner(attention_scores, q.clone(), k.clone())
    name = "attention_scores(q, k)"
    if not isinstance(actual, Tensor):
        raise SelfCheckFailed(f"{name} should be a torch.Tensor, got {type(actual).__name__}.")
    if tuple(actual.shape) != tuple(expected.shape):
        raise SelfCheckFailed(
            f"{name} has shape {tuple(actual.shape)}, expected {tuple(expected.shape)} = [batch, head, query, key]."
        )
    hidden = torch.isinf(expected)
    if not torch.equal(torch.isinf(actual) & (actual < 0), hidden):
        raise SelfCheckFailed(
            f"{name} masks the wrong entries: exactly the keys after their query (key > query) must be -inf "
            f"({int(hidden[0, 0].sum())} of the 9 per head here), everything else finite."
        )
    finite_actual, finite_expected = actual[~hidden], expected[~hidden]
    scale = model.cfg.d_head ** 0.5
    if torch.allclose(finite_actual, finite_expected * scale, atol=1e-3, rtol=1e-3):
        raise SelfCheckFailed(f"{name} is {scale:.3g} times too large: divide q.k by sqrt(d_head) = sqrt({model.cfg.d_head}).")
    assert_tensors_close(
        name + " (the visible entries)", finite_actual, finite_expected, atol=1e-4,
        hint="Entry [b, h, i, j] is q[b, i, h] . k[b, j, h] / sqrt(d_head): queries index rows, keys columns.",
    )
    passed("attention_scores")


@torch.no_grad()
def reference_mlp_input_edit(
    model, tokens: Int[Tensor, "batch 3"], direction: Float[Tensor, "d_model"]
) -> Float[Tensor, "batch 3 p"]:
    """Logits when ``direction`` is added to the MLP's input only (one-layer model without LayerNorm):
    ``resid_post = resid_mid + MLP(resid_mid + direction)``, computed from the cache, without hooks."""
    if model.cfg.n_layers != 1 or model.cfg.normalization_type is not None:
        raise ValueError("reference_mlp_input_edit is written for the one-layer modular model without LayerNorm")
    _, cache = model.run_with_cache(tokens, names_filter="blocks.0.hook_resid_mid")
    resid_mid = cache["blocks.0.hook_resid_mid"]
    resid_post = resid_mid + model.blocks[0].mlp(resid_mid + direction)
    return model.unembed(resid_post)


def check_mlp_input_edit(
    logits_with_mlp_input_edit: Callable[[object, Tensor, Tensor], Tensor], model, n_inputs: int = 256
) -> None:
    """``logits_with_mlp_input_edit(model, tokens, direction)`` must add ``direction`` to what the MLP
    reads and nowhere else: the residual stream after the block keeps ``resid_mid`` unedited."""
    tokens = all_pairs()[:: max(1, 12769 // n_inputs)][:n_inputs]
    generator = torch.Generator().manual_seed(3)
    direction = 3.0 * torch.randn(model.cfg.d_model, generator=generator)
    expected = reference_mlp_input_edit(model, tokens, direction)
    actual = call_learner(logits_with_mlp_input_edit, model, tokens.clone(), direction.clone())
    model.reset_hooks()
    if isinstance(actual, Tensor) and actual.shape == expected.shape:
        with torch.no_grad():
            clean = model(tokens)
            through_residual = expected + direction @ model.W_U  # the edit also passed the MLP by
        if torch.allclose(actual, clean, atol=1e-4):
            raise SelfCheckFailed(
                "logits_with_mlp_input_edit returns the clean logits: the direction never reached the MLP. "
                "Return the logits of model.run_with_hooks(tokens, fwd_hooks=[...]) with your hook(s)."
            )
        if torch.allclose(actual, through_residual, atol=1e-3, rtol=1e-3):
            raise SelfCheckFailed(
                "your edit also reached the residual stream after the MLP (the logits differ from the "
                "reference by exactly direction @ W_U): blocks.0.hook_resid_mid feeds both the MLP and "
                "resid_post, so take the direction out again after the MLP, or edit the MLP's own input."
            )
    assert_tensors_close(
        "logits_with_mlp_input_edit(model, tokens, direction)", actual, expected, atol=1e-3, rtol=1e-4,
        hint="Add the direction to what the MLP reads, and leave resid_post = resid_mid + mlp_out otherwise unchanged.",
    )
    passed("logits_with_mlp_input_edit")
