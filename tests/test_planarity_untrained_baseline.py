"""The structural claims of notebook 1.2 must FAIL on an untrained model of the same architecture.

An assert that a freshly initialised model also passes pins nothing: it would describe the
architecture, not what training produced. Each test below runs the computation behind one of 1.2's
asserts on an untrained model and checks that the claim does not hold there.
"""

from __future__ import annotations

import math

import pytest
import torch

from utils import causal
from utils.planarity import circuit
from utils.planarity.data import load_validation_set


@pytest.fixture(scope="module")
def model(untrained_planarity_model):
    return untrained_planarity_model


@pytest.fixture(scope="module")
def run(model):
    adjacency = load_validation_set().adjacency[:400]
    logits, cache = model.run_with_cache(adjacency)
    return adjacency, cache


def test_no_neighbour_head_and_no_anti_neighbour_heads(model, run):
    adjacency, cache = run
    scores = torch.stack([cache["attn_scores", layer] for layer in range(2)], dim=1).flatten(1, 2)
    explained = circuit.explain_attention_scores(scores, adjacency)
    explained.index = causal.head_names(model)
    layer0 = explained.loc[[f"0.{head}" for head in range(8)]]
    # 1.2: "head 0.0 is a neighbour head": coefficient > 2 with R² > 0.9
    assert not ((layer0["neighbour"] > 2) & (layer0["R²"] > 0.9)).any()
    # 1.2: "0.3 and 0.6 avoid neighbours and themselves" (neighbour < -0.5 and self < -1)
    assert not ((layer0["neighbour"] < -0.5) & (layer0["self"] < -1)).any()
    # 1.2: "1.2 looks away from neighbours and itself, towards high degree"; "1.5 looks at neighbours and itself"
    assert not (explained.loc["1.2", "neighbour"] < -1 and explained.loc["1.2", "self"] < -1 and explained.loc["1.2", "key degree"] > 0.5)
    assert not (explained.loc["1.5", "neighbour"] > 1 and explained.loc["1.5", "self"] > 1)


def test_head_07_attention_does_not_track_degree(run):
    adjacency, cache = run
    pattern = cache["pattern", 0][:, 7]
    entropy = -(pattern * pattern.log()).sum(dim=-1)
    correlation = torch.corrcoef(torch.stack([entropy.flatten(), adjacency.sum(-1).flatten()]))[0, 1].item()
    assert correlation > -0.7  # 1.2 asserts < -0.7 for the trained model


def test_no_composition_score_stands_out(model):
    scores = circuit.composition_scores(model)
    assert max(value.max().item() for value in scores.values()) < 0.5  # 1.2: 0.7 -> 1.3 above 0.5


def test_mlp0_share_of_head_12s_query_is_an_architecture_fact_only_in_part(model, run):
    """On an untrained model MLP0 already writes a large share of head 1.2's key: 1.2 compares against this baseline."""
    adjacency, cache = run
    names, components = circuit.residual_components(model, cache, n_layers=1)
    queries = (components @ model.blocks[1].attn.W_Q[2]).norm(dim=-1).mean(dim=(1, 2))
    assert names[int(queries.argmax())] != "MLP 0"  # the trained model's largest query share is MLP 0; here it is not
