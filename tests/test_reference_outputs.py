"""The shipped models give the outputs they gave on TransformerLens 3.9's HookedTransformer.

``tests/data/reference_outputs.pt`` (written by ``tests/reference_outputs.py``) holds each shipped
model's logits on fixed inputs, the logits after a dozen kinds of hook edits (a head's ``z``
zeroed, ``resid_pre`` patched from another input, the attention pattern or scores replaced,
``resid_mid`` moved, neurons and an MLP zeroed, ``q``/``v``/LayerNorm outputs scaled, ...), each
head's direct logit attribution from ``ActivationCache.stack_head_results`` and, for the decision
transformer, the same after ``fold_layer_norm``; and the logits of a freshly built model, so the
initialisation (the notebooks' untrained baselines) stays the same too. Whatever the models are built on, and whichever
TransformerLens major is installed, these must agree within 1e-5.
"""

from __future__ import annotations

import pytest
import torch

from reference_outputs import MODEL_NAMES, REFERENCE_FILE, compute_outputs, untrained_logits
from utils.checkpoints import load_model

TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def reference() -> dict:
    return torch.load(REFERENCE_FILE, weights_only=True)


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread):
    """Every test here runs on one thread (see conftest.py)."""


def test_reference_file_is_small_and_complete(reference):
    assert REFERENCE_FILE.stat().st_size < 1_000_000
    assert set(reference) == set(MODEL_NAMES)
    for entry in reference.values():
        assert "logits" in entry["outputs"] and sum(key.startswith("edit/") for key in entry["outputs"]) >= 10


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_shipped_model_reproduces_reference_outputs(name, reference):
    stored = reference[name]
    actual = compute_outputs(name, load_model(name, device="cpu"), stored["inputs"])
    actual["untrained/logits"] = untrained_logits(name, stored["inputs"])
    assert set(actual) == set(stored["outputs"]), "the set of reference outputs changed"
    for key, expected in stored["outputs"].items():
        assert actual[key].shape == expected.shape, f"{name} {key}: shape {tuple(actual[key].shape)} != {tuple(expected.shape)}"
        difference = float((actual[key] - expected).abs().max())
        assert difference <= TOLERANCE, f"{name} {key}: differs from the reference by {difference:.3g} (> {TOLERANCE})"


def test_the_comparison_can_fail(reference):
    """A perturbed weight moves the outputs far beyond the tolerance, so the test above can fail."""
    stored = reference["modular_addition"]
    model = load_model("modular_addition", device="cpu")
    with torch.no_grad():
        model.unembed.W_U[:, 0] += 1e-3
    logits = compute_outputs("modular_addition", model, stored["inputs"])["logits"]
    assert float((logits - stored["outputs"]["logits"]).abs().max()) > TOLERANCE
