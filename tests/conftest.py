"""Fixtures shared by the tests."""

from __future__ import annotations

import pytest
import torch

from utils.planarity.model import DEFAULT_MODEL_CONFIG, build_model


@pytest.fixture(scope="module")
def grad_disabled():
    """Turn autograd off for a test module, as the notebooks do, and back on afterwards."""
    previous = torch.is_grad_enabled()
    torch.set_grad_enabled(False)
    yield
    torch.set_grad_enabled(previous)


@pytest.fixture(scope="module")
def untrained_planarity_model(grad_disabled):
    """A freshly initialised (seeded) planarity model: the analysis tools must work on any weights."""
    return build_model(DEFAULT_MODEL_CONFIG).eval()


@pytest.fixture(scope="module")
def one_thread():
    """These tensors are tiny: one thread is as fast, and far faster when other jobs share the CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
