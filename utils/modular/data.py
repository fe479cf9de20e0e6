"""The modular-addition task: every pair ``(a, b)`` as tokens ``[a, b, =]``, label ``(a + b) % p``."""

from __future__ import annotations

import torch
from jaxtyping import Int
from torch import Tensor

P = 113


def all_pairs(p: int = P) -> Int[Tensor, "pair 3"]:
    """Every input ``[a, b, =]`` in the order ``pair = a * p + b``; the ``=`` token has id ``p``."""
    a = torch.arange(p).repeat_interleave(p)
    b = torch.arange(p).repeat(p)
    equals = torch.full_like(a, p)
    return torch.stack([a, b, equals], dim=1)


def labels_for(tokens: Int[Tensor, "pair 3"], p: int = P) -> Int[Tensor, "pair"]:
    """The correct answer ``(a + b) % p`` for each input."""
    return (tokens[:, 0] + tokens[:, 1]) % p


def train_test_split(
    p: int = P, train_fraction: float = 0.3, seed: int = 598
) -> tuple[Int[Tensor, "train"], Int[Tensor, "test"]]:
    """Indices into :func:`all_pairs` for the training and held-out pairs (a seeded permutation)."""
    if not 0.0 < train_fraction < 1.0:
        raise ValueError(f"train_fraction must be between 0 and 1, got {train_fraction}")
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(p * p, generator=generator)
    cut = int(train_fraction * p * p)
    return order[:cut].sort().values, order[cut:].sort().values
