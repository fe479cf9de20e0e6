"""Reference measurements of the modular-addition algorithm: effective weights, Fourier shares, interventions.

Everything here reads a one-layer model of :mod:`utils.modular.model` (no LayerNorm, biases frozen at
zero). The notebooks compute the same things in the open; these functions are the references the
self-checks compare with, and the plumbing the lesson is not about.

Notation: ``p`` numbers ``0 .. p-1``, the ``=`` token is id ``p``; a "frequency" ``k`` is the pair of
Fourier rows ``cos k``, ``sin k`` of :func:`utils.modular.fourier.fourier_basis`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import einops
import torch
from jaxtyping import Float, Int
from torch import Tensor

from utils.modular import fourier
from utils.modular.data import P, all_pairs, labels_for


@dataclass(frozen=True)
class EffectiveWeights:
    """The one-layer model's weights multiplied out along its paths (numbers only, no ``=`` row).

    ``neuron[h, x, n]``: what neuron ``n``'s pre-activation gains when head ``h`` attends fully to a
    token ``x`` (``W_E[x] W_V^h W_O^h W_in``); a neuron reads ``a`` and ``b`` through these, weighted
    by the attention each head pays to them. ``logit[n, c]``: what one unit of neuron ``n`` adds to
    the logit of answer ``c`` (``W_out W_U``). ``attention[h, x]``: the part of head ``h``'s attention
    score from ``=`` to a token ``x`` that depends on ``x`` (``(W_E[=] + W_pos[2]) W_Q^h W_K^h^T W_E[x]^T
    / sqrt(d_head)``; the key's position adds the same amount for every ``x``).
    """

    neuron: Float[Tensor, "head input neuron"]
    logit: Float[Tensor, "neuron output"]
    attention: Float[Tensor, "head input"]


def _check_model(model: Any) -> int:
    cfg = getattr(model, "cfg", None)
    if cfg is None or not hasattr(model, "blocks") or cfg.n_layers != 1:
        raise ValueError("model must be the one-layer modular-addition HookedTransformer; load it with load_model('modular_addition')")
    return int(cfg.d_vocab_out)


@torch.no_grad()
def effective_weights(model: Any) -> EffectiveWeights:
    """The effective weights ``W_neur``, ``W_logit`` and ``W_attn`` of ``model`` (see :class:`EffectiveWeights`)."""
    p = _check_model(model)
    block = model.blocks[0]
    numbers = model.W_E[:p]
    neuron = torch.einsum("xd,hde,hef,fn->hxn", numbers, block.attn.W_V, block.attn.W_O, block.mlp.W_in)
    logit = block.mlp.W_out @ model.W_U
    query = model.W_E[p] + model.W_pos[2]
    scores = torch.einsum("d,hde,hfe,xf->hx", query, block.attn.W_Q, block.attn.W_K, numbers)
    return EffectiveWeights(neuron=neuron, logit=logit, attention=scores / block.attn.attn_scale)


def frequency_power(
    values: Float[Tensor, "input *rest"], p: int = P
) -> Float[Tensor, "frequency_with_constant"]:
    """Squared norm of ``values`` along the Fourier components of its first axis, per frequency.

    Entry 0 is the constant component, entry ``k`` (``1 .. (p-1)/2``) the cos and sin rows of
    frequency ``k`` together, summed over every trailing axis. The entries add up to
    ``values.pow(2).sum()`` (the basis is orthonormal).
    """
    if not isinstance(values, Tensor) or values.ndim < 1 or values.shape[0] != p:
        raise ValueError(
            f"values must be a tensor whose first axis runs over the {p} numbers, got shape "
            f"{tuple(getattr(values, 'shape', ()))}; transpose it so the number axis comes first"
        )
    basis = fourier.fourier_basis(p)[0].to(values.device, torch.float64)
    squared = (basis @ values.double().reshape(p, -1)).pow(2).sum(dim=1)
    return torch.cat([squared[:1], squared[1:].reshape(-1, 2).sum(dim=1)]).float()


def key_share(power: Float[Tensor, "frequency_with_constant"], frequencies: list[int]) -> float:
    """Share of the total in ``power`` (from :func:`frequency_power`) that lies on ``frequencies``."""
    frequencies = fourier.check_frequencies(frequencies, 2 * (len(power) - 1) + 1)
    return float(power[frequencies].sum() / power.sum().clamp_min(1e-30))


def _check_frequency_per_neuron(frequency: Any, neurons: int, p: int) -> Int[Tensor, "neuron"]:
    if not isinstance(frequency, Tensor) or frequency.shape != (neurons,):
        raise ValueError(f"neuron_frequency must be a tensor with one frequency per neuron ({neurons}), "
                         f"got {tuple(getattr(frequency, 'shape', ())) or type(frequency).__name__}")
    if bool(((frequency < 1) | (frequency > p // 2)).any()):
        raise ValueError(f"neuron_frequency must hold frequencies in 1..{p // 2} (column k-1 of the fractions is k; add 1)")
    return frequency.long()


def term_shares(
    activations: Float[Tensor, "a b neuron"], neuron_frequency: Int[Tensor, "neuron"], p: int = P
) -> dict[str, Float[Tensor, "neuron"]]:
    """Share of each neuron's variance over all pairs in the terms of its own frequency ``w``.

    Regressing a neuron's ``a x b`` picture on the orthonormal 2D Fourier terms of ``w`` gives, per
    neuron, ``"linear"``: ``cos wa, sin wa, cos wb, sin wb``; ``"product"``: the four products
    ``cos wa cos wb, cos wa sin wb, sin wa cos wb, sin wa sin wb``; ``"sum"``: the part of the products
    along ``cos w(a+b)`` and ``sin w(a+b)`` (a subspace of the products). A neuron with no variance
    gets 0.
    """
    fourier._check_grid(activations, p, "activations", ", neuron")
    neuron_frequency = _check_frequency_per_neuron(neuron_frequency, activations.shape[2], p)
    coefficients = fourier.fourier_2d(activations.double(), p)
    coefficients[0, 0] = 0.0
    total = coefficients.pow(2).sum(dim=(0, 1)).clamp_min(1e-30)
    neurons = torch.arange(activations.shape[2])
    cos, sin = 2 * neuron_frequency - 1, 2 * neuron_frequency
    c = lambda i, j: coefficients[i, j, neurons]  # noqa: E731 - one coefficient per neuron
    linear = c(0, cos).pow(2) + c(0, sin).pow(2) + c(cos, 0).pow(2) + c(sin, 0).pow(2)
    product = c(cos, cos).pow(2) + c(cos, sin).pow(2) + c(sin, cos).pow(2) + c(sin, sin).pow(2)
    along_sum = ((c(cos, cos) - c(sin, sin)).pow(2) + (c(sin, cos) + c(cos, sin)).pow(2)) / 2
    return {name: (value / total).float() for name, value in
            (("linear", linear), ("product", product), ("sum", along_sum))}


def frequency_projector(frequency: int, p: int = P) -> Float[Tensor, "input input"]:
    """``p x p`` projector onto the constant, ``cos k`` and ``sin k`` (one axis of a frequency's 3 x 3 block)."""
    basis = fourier.fourier_basis(p)[0][[0, *fourier.frequency_components(frequency, p)]].double()
    return (basis.T @ basis).float()


def project_onto_frequency(
    grid: Float[Tensor, "a b *rest"], frequency: int, p: int = P
) -> Float[Tensor, "a b *rest"]:
    """Keep only frequency ``k``'s terms of an ``a x b`` picture (its mean, ``cos/sin ka``, ``cos/sin kb``
    and their products): the 3 x 3 block of 2D Fourier components ``{const, cos k, sin k}``."""
    fourier._check_grid(grid, p, "grid", ", ...")
    projector = frequency_projector(frequency, p).to(grid.device, grid.dtype)
    along_a = torch.einsum("ax,xy...->ay...", projector, grid)  # one axis at a time (a 3-operand einsum builds p^4)
    return torch.einsum("by,ay...->ab...", projector, along_a)


def remove_frequency(
    grid: Float[Tensor, "a b *rest"], frequencies: list[int], p: int = P
) -> Float[Tensor, "a b *rest"]:
    """An ``a x b`` picture with the terms of ``frequencies`` removed: every 2D Fourier component
    whose ``a`` and ``b`` parts are each the constant or ``cos/sin k`` of one of them, except the mean."""
    fourier._check_grid(grid, p, "grid", ", ...")
    frequencies = fourier.check_frequencies(frequencies, p)
    basis = fourier.fourier_basis(p)[0].to(grid.device, grid.dtype)
    coefficients = fourier.fourier_2d(grid, p)
    mask = torch.ones(p, p, dtype=grid.dtype, device=grid.device)
    for frequency in frequencies:
        components = [0, *fourier.frequency_components(frequency, p)]
        for row in components:
            mask[row, components] = 0.0
    mask[0, 0] = 1.0  # the mean stays
    coefficients = coefficients * mask.reshape(p, p, *([1] * (grid.ndim - 2)))
    along_a = torch.einsum("ia,ij...->aj...", basis, coefficients)  # the inverse transform is the transpose
    return torch.einsum("jb,aj...->ab...", basis, along_a)


def frequency_removal_hook(frequencies: list[int], p: int = P) -> Callable[[Tensor, Any], Tensor]:
    """A forward hook for ``blocks.0.mlp.hook_post`` that removes ``frequencies`` from every neuron at ``=``.

    The batch must be all ``p * p`` pairs in the order of :func:`utils.modular.data.all_pairs`: the
    terms of a frequency are defined over the whole ``a x b`` grid. Removing a term replaces it by
    its mean over the grid (zero), so this is a mean-ablation of those directions.
    """
    frequencies = fourier.check_frequencies(frequencies, p)

    def hook(activation: Tensor, hook: Any = None) -> Tensor:
        if activation.shape[0] != p * p:
            raise ValueError(f"run the model on all {p * p} pairs (all_pairs()), got a batch of {activation.shape[0]}")
        grid = einops.rearrange(activation[:, -1], "(a b) neuron -> a b neuron", a=p)
        activation = activation.clone()
        activation[:, -1] = einops.rearrange(remove_frequency(grid, frequencies, p), "a b neuron -> (a b) neuron")
        return activation

    return hook


@torch.no_grad()
def loss_without_frequencies(model: Any, frequencies: list[int], p: int = P) -> float:
    """Mean loss over all pairs with ``frequencies`` removed from the neurons (see :func:`frequency_removal_hook`)."""
    tokens = all_pairs(p).to(model.cfg.device)
    logits = model.run_with_hooks(tokens, fwd_hooks=[("blocks.0.mlp.hook_post", frequency_removal_hook(frequencies, p))])
    return float(fourier.cross_entropy(logits[:, -1], labels_for(tokens, p)))


def loss_per_pair(logits: Float[Tensor, "a b c"], p: int = P) -> Float[Tensor, ""]:
    """Mean cross-entropy of an ``a x b x c`` grid of logits against ``(a + b) mod p``."""
    fourier._check_grid(logits, p, "logits", ", c")
    return fourier.cross_entropy(logits.reshape(p * p, -1), labels_for(all_pairs(p), p).to(logits.device))


def excluded_loss_per_frequency(
    logits: Float[Tensor, "a b c"], frequencies: list[int], p: int = P
) -> dict[int, float]:
    """Loss over all pairs after removing one frequency's ``cos/sin(w(a+b))`` from the logits, per frequency."""
    frequencies = fourier.check_frequencies(frequencies, p)
    return {frequency: float(loss_per_pair(fourier.split_logits(logits, [frequency], p)[1], p))
            for frequency in frequencies}
