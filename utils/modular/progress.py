"""Progress measures over the shipped training run: load a snapshot, measure it.

Notebook 3.2 computes the measures itself from the snapshots (``utils.checkpoints.load_snapshots``);
these are the references its self-checks compare with, and the loader that refuses a snapshot that
does not fit the model (``load_state_dict(strict=False)`` alone would silently load nothing).
"""

from __future__ import annotations

from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from utils.modular import algorithm, fourier
from utils.modular.data import P


def load_snapshot(model: Any, snapshot: dict[str, Tensor]) -> Any:
    """Load one snapshot (``{parameter name: float16 tensor}``) into ``model`` and return it.

    Every trained parameter must be in the snapshot with its shape (the frozen biases are not
    stored and stay zero); else a one-line ``ValueError``.
    """
    if not isinstance(snapshot, dict) or not all(isinstance(value, Tensor) for value in snapshot.values()):
        raise ValueError("snapshot must be one entry of load_snapshots(): a dict of parameter names to tensors, "
                         "e.g. snapshots[epoch]")
    trained = {name: parameter for name, parameter in model.named_parameters() if parameter.requires_grad}
    missing = sorted(set(trained) - set(snapshot))
    extra = sorted(set(snapshot) - set(trained))
    if missing or extra:
        raise ValueError(f"snapshot does not fit the model: missing {missing[:3]}, extra {extra[:3]}; "
                         "pass snapshots[epoch] for a model built from the same config")
    for name, value in snapshot.items():
        if tuple(value.shape) != tuple(trained[name].shape):
            raise ValueError(f"snapshot's {name} has shape {tuple(value.shape)}, the model's {tuple(trained[name].shape)}")
    model.load_state_dict({name: value.float() for name, value in snapshot.items()}, strict=False)
    return model


def total_squared_weight(model: Any) -> float:
    """Sum of the squares of every parameter (the quantity weight decay shrinks)."""
    return float(sum(parameter.detach().double().pow(2).sum() for parameter in model.parameters()))


def embedding_key_share(
    embedding: Float[Tensor, "input d_model"], frequencies: list[int], p: int = P
) -> float:
    """Share of the number embedding's squared norm (``W_E[:-1]``, constant component included) on ``frequencies``."""
    if isinstance(embedding, Tensor) and embedding.ndim == 2 and embedding.shape[0] == p + 1:
        raise ValueError(f"embedding has {p + 1} rows: the last is the '=' token; pass model.W_E[:-1]")
    return algorithm.key_share(algorithm.frequency_power(embedding.detach(), p), frequencies)


def single_frequency_share(
    neuron_activations: Float[Tensor, "a b neuron"], threshold: float = 0.85, p: int = P
) -> float:
    """Share of neurons whose variance is explained to at least ``threshold`` by one frequency."""
    if not (isinstance(threshold, (int, float)) and 0 < threshold <= 1):
        raise ValueError(f"threshold must lie in (0, 1], got {threshold!r}")
    fractions = fourier.neuron_frequency_fractions(neuron_activations, p)
    return float((fractions.max(dim=1).values >= threshold).float().mean())
