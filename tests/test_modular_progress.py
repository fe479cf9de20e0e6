"""Chapter 3: loading training snapshots and the progress measures of notebook 3.2 (utils.modular.progress)."""

from __future__ import annotations

import math

import pytest
import torch

from utils.modular import progress
from utils.modular.data import P
from utils.modular.model import DEFAULT_MODEL_CONFIG, build_model
from utils.modular.train import weight_snapshot


@pytest.fixture(scope="module")
def pair():
    torch.manual_seed(1)
    source, target = build_model(DEFAULT_MODEL_CONFIG), build_model(DEFAULT_MODEL_CONFIG)
    with torch.no_grad():
        source.W_E.mul_(3.0)  # make the two models differ
    return source, target


def test_load_snapshot_copies_every_trained_weight(pair):
    source, target = pair
    snapshot = weight_snapshot(source)
    progress.load_snapshot(target, snapshot)
    for name, parameter in target.named_parameters():
        if parameter.requires_grad:
            assert torch.equal(parameter.detach(), snapshot[name].float()), name
            assert parameter.dtype == torch.float32
    assert progress.total_squared_weight(target) == pytest.approx(
        sum(float(value.float().pow(2).sum()) for value in snapshot.values()), rel=1e-6)


def test_load_snapshot_refuses_a_snapshot_that_does_not_fit(pair):
    source, target = pair
    snapshot = weight_snapshot(source)
    with pytest.raises(ValueError, match="missing \\['blocks.0.attn.W_K'\\]"):
        progress.load_snapshot(target, {k: v for k, v in snapshot.items() if k != "blocks.0.attn.W_K"})
    with pytest.raises(ValueError, match="shape"):
        progress.load_snapshot(target, {**snapshot, "embed.W_E": snapshot["embed.W_E"][:-1]})
    with pytest.raises(ValueError, match="snapshots\\[epoch\\]"):
        progress.load_snapshot(target, {0: snapshot})


def test_embedding_key_share_counts_the_constant_in_the_total():
    x = torch.arange(P, dtype=torch.float64)
    embedding = torch.stack([torch.cos(2 * math.pi * 4 * x / P), torch.full((P,), 1.0)], dim=1).float()
    # cos 4 has squared norm P/2, the constant column P: a third of the total is on frequency 4
    assert progress.embedding_key_share(embedding, [4]) == pytest.approx(1 / 3, abs=1e-4)
    assert progress.embedding_key_share(embedding, [5]) == pytest.approx(0.0, abs=1e-4)
    with pytest.raises(ValueError, match="'=' token"):
        progress.embedding_key_share(torch.zeros(P + 1, 4), [4])


def test_single_frequency_share_counts_neurons_over_the_threshold():
    a = torch.arange(P, dtype=torch.float64)[:, None] * 2 * math.pi / P
    b = torch.arange(P, dtype=torch.float64)[None, :] * 2 * math.pi / P
    pure = torch.cos(3 * a) * torch.cos(3 * b)
    mixed = torch.cos(3 * a) + torch.cos(8 * b)  # half on each frequency
    grid = torch.stack([pure, mixed, pure + 0.1 * torch.sin(20 * a)], dim=-1).float()
    assert progress.single_frequency_share(grid, 0.85) == pytest.approx(2 / 3)
    assert progress.single_frequency_share(grid, 0.4) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="threshold"):
        progress.single_frequency_share(grid, 85)
