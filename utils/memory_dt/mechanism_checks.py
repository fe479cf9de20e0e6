"""Self-checks for the exercises of notebook 2.2 (the mechanism found causally).

Each check runs the learner's hook (or function) on the shipped model at the decision step of the
four configurations and compares the model's logits with those of the reference implementation
below, e.g. ``mechanism_checks.check_mean_ablation_hook(mean_ablation_hook, model, inputs, reference)``.
"""

from __future__ import annotations

from functools import partial
from typing import Any, Callable

import torch
from jaxtyping import Float
from torch import Tensor
from transformer_lens import ActivationCache

from utils import causal
from utils.memory_dt.model import DecisionTransformer
from utils.selfcheck import SelfCheckFailed, assert_tensors_close, call_learner, passed

Inputs = tuple[Tensor, Tensor, Tensor, Tensor]


def reference_mean_ablation_hook(
    z: Float[Tensor, "batch pos head d_head"], hook: Any, head: int, mean_z: Float[Tensor, "pos d_head"]
) -> Float[Tensor, "batch pos head d_head"]:
    """Replace head ``head``'s output ``z`` at every position by ``mean_z`` (its reference mean there)."""
    z = z.clone()
    z[:, :, head] = mean_z
    return z


def reference_patch_head_hook(
    z: Float[Tensor, "batch pos head d_head"], hook: Any, head: int, positions: list[int],
    source_z: Float[Tensor, "batch pos head d_head"],
) -> Float[Tensor, "batch pos head d_head"]:
    """Set head ``head``'s output at ``positions`` to its value in the source run."""
    z = z.clone()
    z[:, positions, head] = source_z[:, positions, head]
    return z


@torch.no_grad()
def reference_qk_ov_patch(
    model: DecisionTransformer, inputs: Inputs, source_inputs: Inputs, layer: int, head: int
) -> tuple[Float[Tensor, "batch timestep action"], Float[Tensor, "batch timestep action"]]:
    """Run ``inputs`` twice: once with head ``(layer, head)``'s attention *pattern* taken from
    ``source_inputs`` (values its own), once with its *values* taken from there (pattern its own)."""
    _, source = model.run_with_cache(*source_inputs, names_filter=lambda name: name.startswith(f"blocks.{layer}.attn.hook_"))

    def patch(activation: Tensor, hook: Any, dim: int) -> Tensor:
        activation = activation.clone()
        index = [slice(None)] * activation.ndim
        index[dim] = head
        activation[tuple(index)] = source[hook.name][tuple(index)]
        return activation

    pattern_only = model.run_with_hooks(*inputs, fwd_hooks=[(f"blocks.{layer}.attn.hook_pattern", partial(patch, dim=1))])
    value_only = model.run_with_hooks(*inputs, fwd_hooks=[(f"blocks.{layer}.attn.hook_v", partial(patch, dim=2))])
    return pattern_only, value_only


def _returned_tensor(name: str, result: Any) -> Tensor:
    """A hook that returns nothing leaves the activation as it was; say so instead of comparing logits."""
    if not isinstance(result, Tensor):
        raise SelfCheckFailed(f"{name} returned {type(result).__name__}; return the edited z (a tensor of the same shape)")
    return result


def _run_hook(model: DecisionTransformer, inputs: Inputs, hook_name: str, hook: Callable[..., Tensor]) -> Tensor:
    with torch.no_grad():
        return model.run_with_hooks(*inputs, fwd_hooks=[(hook_name, hook)])


def check_mean_ablation_hook(learner: Callable[..., Tensor], model: DecisionTransformer, inputs: Inputs,
                             mean_z: Float[Tensor, "layer pos head d_head"]) -> None:
    """Mean-ablate L0H1 and L1H2 (separately) with the learner's hook; compare the logits.

    The check shifts ``mean_z`` by a fixed random offset first, so that a hook which averages the
    batch it is given (``z.mean(0)``) instead of using ``mean_z`` fails even when the batch is the
    reference set itself; and it checks that the hook leaves its input unchanged."""
    generator = torch.Generator().manual_seed(0)
    mean_z = mean_z + mean_z.std() * torch.randn(mean_z.shape, generator=generator)
    for layer, head in ((0, 1), (1, 2)):
        hook_name = f"blocks.{layer}.attn.hook_z"
        expected = _run_hook(model, inputs, hook_name, partial(reference_mean_ablation_hook, head=head, mean_z=mean_z[layer, :, head]))

        def hook(z: Tensor, hook: Any, head: int = head, layer: int = layer) -> Tensor:
            before = z.clone()
            result = _returned_tensor("mean_ablation_hook", call_learner(learner, z, hook, head=head, mean_z=mean_z[layer, :, head]))
            if not torch.equal(z, before):
                raise SelfCheckFailed("mean_ablation_hook changed its input z in place; edit a copy (z = z.clone()) and return that")
            return result

        actual = _run_hook(model, inputs, hook_name, hook)
        assert_tensors_close(f"logits with L{layer}H{head} mean-ablated by your hook", actual, expected, atol=1e-4,
                             hint="replace only head `head` (z[:, :, head]) with the mean_z you are given (not zeros, not z.mean(0)) at every position")
    passed("mean_ablation_hook")


def check_patch_head_hook(learner: Callable[..., Tensor], model: DecisionTransformer, inputs: Inputs,
                          source_inputs: Inputs) -> None:
    """Patch L0H1 from the source run, at the first state token only and at every position."""
    _, source = model.run_with_cache(*source_inputs, names_filter=lambda name: name == "blocks.0.attn.hook_z")
    source_z = source["blocks.0.attn.hook_z"]
    n_positions = source_z.shape[1]
    for positions in ([1], [n_positions - 1], list(range(n_positions))):
        expected = _run_hook(model, inputs, "blocks.0.attn.hook_z",
                             partial(reference_patch_head_hook, head=1, positions=positions, source_z=source_z))

        def hook(z: Tensor, hook: Any, positions: list[int] = positions) -> Tensor:
            try:
                result = call_learner(learner, z, hook, head=1, positions=positions, source_z=source_z)
            except (IndexError, RuntimeError) as error:
                raise SelfCheckFailed(f"patch_head_hook raised {type(error).__name__} ({str(error).splitlines()[0][:80]}); z is "
                                      "[batch, pos, head, d_head]: index it as z[:, positions, head], not z[:, head, positions]") from None
            return _returned_tensor("patch_head_hook", result)

        actual = _run_hook(model, inputs, "blocks.0.attn.hook_z", hook)
        assert_tensors_close(f"logits with L0H1 patched at positions {positions if len(positions) < 4 else 'all'}", actual, expected,
                             atol=1e-4, hint="copy source_z only for head `head` and only at `positions`")
    passed("patch_head_hook")


def check_qk_ov_patch(learner: Callable[..., Any], model: DecisionTransformer, inputs: Inputs, source_inputs: Inputs) -> None:
    """The learner's (pattern-only, value-only) logits for L0H1 and L1H2 against the reference."""
    for layer, head in ((0, 1), (1, 2)):
        result = call_learner(learner, model, inputs, source_inputs, layer, head)
        if not (isinstance(result, tuple) and len(result) == 2):
            raise SelfCheckFailed(f"qk_ov_patch must return a tuple (pattern_only_logits, value_only_logits), got {type(result).__name__}")
        expected = reference_qk_ov_patch(model, inputs, source_inputs, layer, head)
        for name, actual, reference in zip(("pattern-only", "value-only"), result, expected):
            assert_tensors_close(f"{name} logits for L{layer}H{head}", actual, reference, atol=1e-4,
                                 hint="patch hook_pattern [batch, head, query, key] for the pattern and hook_v [batch, pos, head, d_head] "
                                      "for the values, each only for `head`, with the source run's activation")
    passed("qk_ov_patch")


@torch.no_grad()
def reference_patch_holding(
    model: DecisionTransformer, inputs: Inputs, source: ActivationCache, base: ActivationCache,
    patched: list[tuple[int, int]], held: list[tuple[int, int]],
) -> Float[Tensor, "batch timestep action"]:
    """The model on ``inputs`` with the heads ``patched`` (``(layer, head)`` pairs) set to their
    ``source`` outputs and the heads ``held`` fixed at their ``base`` outputs (``base`` is the
    cache of ``inputs`` itself), so a patched head's effect cannot pass through a held one."""
    hooks = causal.patching_hooks(model, [f"{layer}.{head}" for layer, head in patched], source)
    hooks += causal.patching_hooks(model, [f"{layer}.{head}" for layer, head in held if (layer, head) not in patched], base)
    return causal.run_with_hooks(model, inputs, hooks)


def check_patch_holding(learner: Callable[..., Tensor], model: DecisionTransformer, inputs: Inputs, source_inputs: Inputs) -> None:
    """The learner's patch-while-holding logits against the reference, for three choices of heads."""
    _, source = model.run_with_cache(*source_inputs)
    _, base = model.run_with_cache(*inputs)
    cases = (([(0, 1)], [(1, 2), (1, 3)]), ([(0, 1)], []), ([(1, 2), (1, 3)], [(2, 4)]), ([(0, 1), (1, 2)], [(1, 2), (1, 3)]))
    for patched, held in cases:
        actual = call_learner(learner, model, inputs, source, base, patched, held)
        expected = reference_patch_holding(model, inputs, source, base, patched, held)
        assert_tensors_close(f"logits with {patched} patched and {held} held", actual, expected, atol=1e-4,
                             hint="patched heads take hook_z from `source`, held heads from `base` (a head in both lists is patched); both on hook_z of their layer")
    passed("patch_holding")
