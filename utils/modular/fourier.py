"""Reference Fourier analysis for the modular-addition model.

The chapter's exercises ask learners to write these themselves; the self-checks compare their
versions with these, and the training command uses them for its progress measures.
"""

from __future__ import annotations

import math
from typing import Any

import einops
import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor

from utils.modular.data import P, all_pairs, labels_for


def _check_p(p: Any) -> int:
    if isinstance(p, bool) or not isinstance(p, int) or p < 3 or p % 2 == 0:
        raise ValueError(f"the basis here is for odd p >= 3, got p={p!r}; the course uses p={P}")
    return p


def check_frequencies(frequencies: Any, p: int = P) -> list[int]:
    """The frequencies as a list of ints, each in ``1 .. (p-1)/2`` and listed once; else ``ValueError``.

    Frequency 0 is the constant (no cos/sin pair), ``p - k`` is the same wave as ``k`` (cos equal,
    sin negated), so both are refused with the frequency to use instead.
    """
    top = p // 2
    if isinstance(frequencies, Tensor):
        frequencies = frequencies.tolist()
    if isinstance(frequencies, (int, str)) or not hasattr(frequencies, "__iter__"):
        raise ValueError(f"frequencies must be a list of ints such as [14, 35], got {frequencies!r}")
    frequencies = list(frequencies)
    if not frequencies:
        raise ValueError(f"frequencies is empty; pass at least one frequency in 1..{top}, e.g. the model's key frequencies")
    seen: set[int] = set()
    for frequency in frequencies:
        if isinstance(frequency, bool) or not isinstance(frequency, (int, np.integer)):
            raise ValueError(f"frequencies must be ints in 1..{top}, got {frequency!r} ({type(frequency).__name__})")
        frequency = int(frequency)
        if frequency == 0:
            raise ValueError(f"frequency 0 is the constant and has no cos/sin pair; use frequencies in 1..{top}")
        if not 1 <= frequency <= top:
            alias = frequency % p
            alias = min(alias, p - alias)
            hint = f"; it is the same wave as {alias}" if alias else ""
            raise ValueError(f"frequency {frequency} is outside 1..{top}{hint}; use frequencies in 1..{top}")
        if frequency in seen:
            raise ValueError(f"frequency {frequency} is listed twice; list each frequency once")
        seen.add(frequency)
    return [int(frequency) for frequency in frequencies]


def _check_grid(values: Any, p: int, name: str, trailing: str) -> None:
    if not isinstance(values, Tensor):
        raise ValueError(f"{name} must be a torch tensor, got {type(values).__name__}")
    if values.ndim < 2 or tuple(values.shape[:2]) != (p, p):
        raise ValueError(
            f"{name} must have shape [{p}, {p}{trailing}] (a by b), got {tuple(values.shape)}; reshape the "
            f"{p * p} pairs with einops.rearrange(x, '(a b) ... -> a b ...', a={p})"
        )


def fourier_basis(p: int = P) -> tuple[Float[Tensor, "component input"], list[str]]:
    """Orthonormal Fourier basis of functions on ``0..p-1`` (p odd).

    Row 0 is the constant; rows ``2k-1`` and ``2k`` are ``cos`` and ``sin`` of frequency ``k``
    (``2 pi k x / p``) for ``k = 1 .. (p-1)/2``. Returns the basis and a name per row.
    """
    _check_p(p)
    inputs = torch.arange(p, dtype=torch.float64)
    rows = [torch.ones(p, dtype=torch.float64)]
    names = ["const"]
    for frequency in range(1, p // 2 + 1):
        angle = 2 * math.pi * frequency * inputs / p
        rows += [torch.cos(angle), torch.sin(angle)]
        names += [f"cos {frequency}", f"sin {frequency}"]
    basis = torch.stack(rows)
    basis = basis / basis.norm(dim=1, keepdim=True)
    return basis.float(), names


def embedding_frequency_norms(
    embedding: Float[Tensor, "input d_model"], p: int = P
) -> Float[Tensor, "frequency"]:
    """Norm of the embedding along each frequency's cos and sin rows; entry ``k - 1`` is frequency ``k``.

    ``embedding`` has one row per number ``0 .. p-1``: ``model.W_E[:-1]``, without the ``=`` row.
    """
    _check_p(p)
    if not isinstance(embedding, Tensor) or embedding.ndim != 2:
        raise ValueError(f"embedding must be a 2D tensor [input, d_model], got {getattr(embedding, 'shape', embedding)!r}")
    if embedding.shape[0] == p + 1:
        raise ValueError(
            f"embedding has {p + 1} rows: the last is the '=' token, which is not a number; pass model.W_E[:-1]"
        )
    if embedding.shape[0] != p:
        raise ValueError(f"embedding must have one row per number 0..{p - 1} ({p} rows), got {embedding.shape[0]}")
    in_fourier_basis = fourier_basis(p)[0].to(embedding.device, embedding.dtype) @ embedding
    return torch.stack(
        [in_fourier_basis[frequency_components(k, p)].norm() for k in range(1, p // 2 + 1)]
    )


def fourier_2d(
    values: Float[Tensor, "a b *rest"], p: int = P
) -> Float[Tensor, "component_a component_b *rest"]:
    """2D Fourier transform over the ``a`` and ``b`` axes (any trailing axes are kept)."""
    _check_p(p)
    _check_grid(values, p, "values", ", ...")
    basis = fourier_basis(p)[0].to(values.device, values.dtype)
    # Two contractions, one axis at a time: a single three-operand einsum would build a p^4 tensor.
    along_a = torch.einsum("ia,ab...->ib...", basis, values)
    return torch.einsum("jb,ib...->ij...", basis, along_a)


def frequency_components(frequency: int, p: int = P) -> list[int]:
    """Rows of the 1D basis that belong to ``frequency`` (``1 .. (p-1)/2``): its cos and sin."""
    frequency = check_frequencies([frequency], p)[0]
    return [2 * frequency - 1, 2 * frequency]


def neuron_frequency_fractions(
    neuron_activations: Float[Tensor, "a b neuron"], p: int = P
) -> Float[Tensor, "neuron frequency"]:
    """Fraction of each neuron's variance (over all pairs) explained by each frequency.

    A neuron "uses" frequency ``k`` through the 2D Fourier components whose ``a`` and ``b`` parts
    are each the constant or ``cos k`` / ``sin k``. Column ``k - 1`` is frequency ``k``.
    """
    _check_grid(neuron_activations, p, "neuron_activations", ", neuron")
    coefficients = fourier_2d(neuron_activations, p)
    coefficients[0, 0] = 0.0  # the mean is not variance
    total = coefficients.pow(2).sum(dim=(0, 1))
    fractions = []
    for frequency in range(1, p // 2 + 1):
        rows = [0, *frequency_components(frequency, p)]
        block = coefficients[rows][:, rows]
        fractions.append(block.pow(2).sum(dim=(0, 1)) / total.clamp_min(1e-12))
    return torch.stack(fractions, dim=1)


@torch.no_grad()
def neuron_activations_grid(model, p: int = P) -> Float[Tensor, "a b neuron"]:
    """Post-ReLU MLP activations at the ``=`` position for every pair, as an ``a x b`` grid."""
    tokens = all_pairs(p).to(model.cfg.device)
    _, cache = model.run_with_cache(tokens, names_filter="blocks.0.mlp.hook_post")
    activations = cache["blocks.0.mlp.hook_post"][:, -1, :]
    return einops.rearrange(activations, "(a b) neuron -> a b neuron", a=p, b=p)


def key_frequencies(
    model, p: int = P, min_fraction: float = 0.5, min_neurons: int = 5
) -> list[int]:
    """Frequencies the model computes with, read off its neurons.

    Each neuron gets the frequency that explains most of its variance; a frequency is "key" when
    at least ``min_neurons`` neurons are explained to at least ``min_fraction`` by it.
    """
    if not (isinstance(min_fraction, (int, float)) and 0 < min_fraction <= 1):
        raise ValueError(f"min_fraction must lie in (0, 1], got {min_fraction!r}")
    if isinstance(min_neurons, bool) or not isinstance(min_neurons, int) or min_neurons < 1:
        raise ValueError(f"min_neurons must be a positive int, got {min_neurons!r}")
    fractions = neuron_frequency_fractions(neuron_activations_grid(model, p), p)
    best_fraction, best_index = fractions.max(dim=1)
    counts = torch.bincount(best_index[best_fraction >= min_fraction], minlength=p // 2)
    return sorted(int(index) + 1 for index in torch.nonzero(counts >= min_neurons).flatten())


def sum_direction_basis(
    frequencies: list[int], p: int = P
) -> Float[Tensor, "direction a b"]:
    """Orthonormal ``a x b`` patterns ``cos(w(a+b))`` and ``sin(w(a+b))`` for each frequency.

    ``frequencies`` must be distinct, in ``1 .. (p-1)/2`` (see :func:`check_frequencies`).
    """
    frequencies = check_frequencies(frequencies, _check_p(p))
    a = torch.arange(p, dtype=torch.float64)[:, None]
    b = torch.arange(p, dtype=torch.float64)[None, :]
    patterns = []
    for frequency in frequencies:
        angle = 2 * math.pi * frequency * (a + b) / p
        patterns += [torch.cos(angle), torch.sin(angle)]
    stacked = torch.stack(patterns)
    return (stacked / stacked.flatten(1).norm(dim=1)[:, None, None]).float()


def split_logits(
    logits: Float[Tensor, "a b c"], frequencies: list[int], p: int = P
) -> tuple[Float[Tensor, "a b c"], Float[Tensor, "a b c"]]:
    """Split logits into the part along the key ``cos/sin(w(a+b))`` patterns and the rest.

    Returns ``(restricted, excluded)``: ``restricted`` keeps each output's mean plus its
    projection onto the key-frequency patterns; ``excluded`` is the logits minus that projection.
    """
    _check_grid(logits, p, "logits", ", c")
    directions = sum_direction_basis(frequencies, p).to(logits.device, logits.dtype)
    coefficients = torch.einsum("dab,abc->dc", directions, logits)
    along_key = torch.einsum("dab,dc->abc", directions, coefficients)
    mean = logits.mean(dim=(0, 1), keepdim=True)
    return mean + along_key, logits - along_key


def cross_entropy(
    logits: Float[Tensor, "pair vocab"], labels: Int[Tensor, "pair"]
) -> Float[Tensor, ""]:
    """Mean cross-entropy in float64 (losses near 1e-7 underflow in float32)."""
    log_probs = logits.double().log_softmax(dim=-1)
    return -log_probs.gather(-1, labels[:, None]).mean()


@torch.no_grad()
def restricted_and_excluded_loss(
    model, frequencies: list[int], train_indices: Int[Tensor, "train"], p: int = P,
    logits: Float[Tensor, "pair c"] | None = None,
) -> tuple[float, float]:
    """Loss on all pairs with only the key-frequency logits kept, and training loss without them.

    ``logits``: the logits at ``=`` for ``all_pairs(p)`` when already computed (the training command
    passes :func:`utils.modular.model.final_position_logits`'s); by default ``model`` is run.
    """
    tokens = all_pairs(p).to(model.cfg.device)
    labels = labels_for(tokens, p)
    if logits is None:
        logits = model(tokens)[:, -1, :]
    elif tuple(logits.shape) != (p * p, p):
        raise ValueError(f"logits must be [{p * p}, {p}] (the logits at '=' for all_pairs(p)), got {tuple(logits.shape)}")
    labels = labels.to(logits.device)
    grid = einops.rearrange(logits, "(a b) c -> a b c", a=p, b=p)
    restricted, excluded = split_logits(grid, frequencies, p)
    restricted_loss = cross_entropy(restricted.reshape(p * p, -1), labels)
    train_indices = train_indices.to(logits.device)
    excluded_loss = cross_entropy(excluded.reshape(p * p, -1)[train_indices], labels[train_indices])
    return float(restricted_loss), float(excluded_loss)
