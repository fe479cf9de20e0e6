"""Notebook 1.3's mechanism tools (probes, steering, baselines, graphs built for a test), their
self-checks, and the untrained baseline: the notebook's key structural claims must FAIL on a
freshly initialised model of the same architecture, or they would pin nothing."""

from __future__ import annotations

import networkx as nx
import pytest
import torch

from utils import causal
from utils.planarity import mechanism, neuron_checks, neurons
from utils.planarity.checks import sample_graphs
from utils.planarity.data import balanced_dataset, graph_from_adjacency, planarity_labels
from utils.planarity.model import NON_PLANAR, PLANAR
from utils.selfcheck import SelfCheckFailed


@pytest.fixture(scope="module")
def model(untrained_planarity_model):
    return untrained_planarity_model


@pytest.fixture(scope="module")
def graphs():
    return balanced_dataset(120, seed=21)


def test_ridge_probe_solves_the_ridge_problem_without_penalising_the_bias():
    generator = torch.Generator().manual_seed(0)
    resid = torch.randn(30, 10, 8, generator=generator)
    degree = resid @ torch.randn(8, generator=generator) + 3.0
    w, b = mechanism.ridge_degree_probe(resid, degree, 0.0)
    assert torch.allclose(resid @ w + b, degree, atol=1e-4)
    w_huge, b_huge = mechanism.ridge_degree_probe(resid, degree, 1e9)
    assert w_huge.norm() < 1e-4 and b_huge == pytest.approx(degree.mean().item(), abs=1e-4), "the bias is not shrunk"
    w_some, _ = mechanism.ridge_degree_probe(resid, degree, 10.0)
    assert 0 < w_some.norm() < w.norm()
    with pytest.raises(ValueError, match="ridge"):
        mechanism.ridge_degree_probe(resid, degree, -1.0)


def test_steer_vertex_adds_at_one_vertex_and_reads_attention_to_it(model, graphs):
    adjacency = graphs.adjacency[:20]
    vertices = torch.arange(20) % 10
    logits = model(adjacency)
    difference, attention = mechanism.steer_vertex(model, adjacency, vertices, torch.zeros(model.cfg.d_model))
    assert torch.allclose(difference, logits[:, PLANAR] - logits[:, NON_PLANAR], atol=1e-5)
    assert attention.shape == (20, 8) and (attention > 0).all()
    moved, _ = mechanism.steer_vertex(model, adjacency, vertices, torch.ones(model.cfg.d_model) * 5)
    assert not torch.allclose(moved, difference)
    pattern = torch.zeros(1, 1, 3, 3)
    pattern[0, 0, :, 1] = torch.tensor([0.2, 0.9, 0.4])
    assert mechanism.attention_received(pattern, torch.tensor([1]))[0, 0] == pytest.approx(0.3), "own query left out"


def test_degree_slope_direction_recovers_a_planted_step():
    degree = torch.randint(0, 9, (50, 10)).float()
    step = torch.randn(6)
    resid = degree[..., None] * step + 2.0
    assert torch.allclose(mechanism.degree_slope_direction(resid, degree), step, atol=1e-4)


def test_graph_statistics_and_logistic_regression():
    k4 = torch.ones(1, 10, 10)
    k4[0, 4:, :] = 0
    k4[0, :, 4:] = 0
    k4[0] -= torch.diag(torch.diag(k4[0]))
    stats = mechanism.graph_statistics(k4, "degrees + triangles + 4-cycles")
    assert stats[0, :4].tolist() == [3, 3, 3, 3] and stats[0, 10].item() == 6 and stats[0, 11].item() == 4
    assert stats[0, -1].item() == 3, "K4 has three 4-cycles"
    with pytest.raises(ValueError, match="unknown features"):
        mechanism.graph_statistics(k4, "degree")
    features = torch.randn(200, 3)
    labels = (features[:, 0] > 0).long()
    predict = mechanism.fit_logistic_regression(features, labels)
    assert (predict(features) == labels).float().mean() > 0.95


def test_degree_preserving_flips_keep_degrees_and_flip_planarity(graphs):
    originals, swapped = mechanism.degree_preserving_flips(graphs.adjacency[:30], seed=0)
    assert len(originals) >= 15
    assert torch.equal(originals.sum(dim=-1), swapped.sum(dim=-1))
    assert (planarity_labels(originals) != planarity_labels(swapped)).all()
    assert ((originals - swapped).abs().sum(dim=(1, 2)) == 8).all(), "exactly two edges move"


def test_kuratowski_variants_are_what_they_claim():
    batch = mechanism.kuratowski_variants("K3,3", 5, seed=0, subdivisions=1)
    assert (batch.labels == 0).all() and (batch.edge_counts == 10).all()
    assert ((batch.adjacency.sum(dim=-1) == 0).sum(dim=-1) == 3).all()
    padded = mechanism.kuratowski_variants("K5", 5, seed=0, pad_edges=2)
    assert (padded.edge_counts == 12).all() and (padded.labels == 0).all()
    core = graph_from_adjacency(mechanism.kuratowski_variants("K3,3", 1, seed=1).adjacency[0])
    core = core.subgraph([vertex for vertex in core if core.degree(vertex) > 0])
    assert nx.is_isomorphic(core, nx.complete_bipartite_graph(3, 3))
    with pytest.raises(ValueError, match="does not fit"):
        mechanism.kuratowski_variants("K5", 1, subdivisions=6)
    with pytest.raises(ValueError, match="K5"):
        mechanism.kuratowski_variants("K4", 1)


# --------------------------------------------------------------------------------------------
# Self-checks


def test_ridge_probe_check_passes_the_reference_and_names_typical_mistakes(model, graphs):
    _, cache = model.run_with_cache(graphs.adjacency[:40])
    resid, degree = cache["blocks.0.hook_resid_mid"], graphs.adjacency[:40].sum(dim=-1)
    neuron_checks.check_ridge_degree_probe(mechanism.ridge_degree_probe, resid, degree)

    def stub(resid, degree, ridge):
        raise NotImplementedError

    def penalised_bias(resid, degree, ridge):
        x = resid.reshape(-1, resid.shape[-1]).double()
        design = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], dim=1)
        solution = torch.linalg.pinv(design.T @ design + ridge * torch.eye(design.shape[1], dtype=x.dtype)) @ design.T @ degree.reshape(-1).double()
        return solution[:-1].float(), solution[-1].item()

    def ridge_ignored(resid, degree, ridge):
        return mechanism.ridge_degree_probe(resid, degree, 0.0)

    with pytest.raises(SelfCheckFailed, match="NotImplementedError"):
        neuron_checks.check_ridge_degree_probe(stub, resid, degree)
    with pytest.raises(SelfCheckFailed, match="penalised the bias"):
        neuron_checks.check_ridge_degree_probe(penalised_bias, resid, degree)
    with pytest.raises(SelfCheckFailed, match="ridge=100"):
        neuron_checks.check_ridge_degree_probe(ridge_ignored, resid, degree)


def test_steer_vertex_check_passes_the_reference_and_names_typical_mistakes(model, graphs):
    adjacency = graphs.adjacency[:30]
    neuron_checks.check_steer_vertex(mechanism.steer_vertex, model, adjacency)

    def with_pattern_of(pattern_view, everywhere=False):
        def steer(model, adjacency, vertices, vector, hook_name):
            rows, recorded = torch.arange(len(adjacency)), {}

            def add(resid, hook):
                resid = resid.clone()
                if everywhere:
                    return resid + vector
                resid[rows, vertices] += vector
                return resid

            def record(pattern, hook):
                recorded["pattern"] = pattern

            logits = model.run_with_hooks(adjacency, fwd_hooks=[(hook_name, add), ("blocks.1.attn.hook_pattern", record)])
            return logits[:, PLANAR] - logits[:, NON_PLANAR], pattern_view(recorded["pattern"], vertices)
        return steer

    rows = torch.arange(30)
    with pytest.raises(SelfCheckFailed, match="every vertex"):
        neuron_checks.check_steer_vertex(with_pattern_of(mechanism.attention_received, everywhere=True), model, adjacency)
    with pytest.raises(SelfCheckFailed, match="all 10 queries"):
        neuron_checks.check_steer_vertex(with_pattern_of(lambda p, v: p[rows, :, :, v].mean(dim=-1)), model, adjacency)
    with pytest.raises(SelfCheckFailed, match="pays"):
        neuron_checks.check_steer_vertex(with_pattern_of(lambda p, v: mechanism.attention_received(p.transpose(-1, -2), v)), model, adjacency)


# --------------------------------------------------------------------------------------------
# The untrained baseline: notebook 1.3's structural asserts fail on an untrained model


def test_notebook_structural_claims_fail_on_an_untrained_model(model, graphs):
    adjacency, labels = graphs.adjacency, graphs.labels
    degree = adjacency.sum(dim=-1)
    logits, cache = model.run_with_cache(adjacency)
    accuracy = (logits.argmax(dim=-1) == labels).float().mean().item()
    assert accuracy < 0.995, "setup: the notebook asserts >= 99.5% accuracy"

    # section 1: the embedding's projection on the mean W_E row counts neighbours almost exactly
    assert mechanism.correlation(cache["hook_embed"] @ model.W_E.mean(dim=0), degree) < 0.99

    # section 2: head 0.0's W_pos·W_E term is the adjacency matrix
    attention = model.blocks[0].attn
    term = (cache["hook_pos_embed"] @ attention.W_Q[0]) @ (cache["hook_embed"] @ attention.W_K[0]).transpose(-1, -2)
    centred = term - term.mean(dim=-1, keepdim=True)
    assert abs(mechanism.correlation(centred, adjacency - adjacency.mean(dim=-1, keepdim=True))) < 0.95
    gaps = {name: neurons.diagonal_gap(matrix) for name, matrix in neurons.layer0_qk_terms(model, 0).items()}
    assert not (max(gaps, key=gaps.get) == "query W_pos · key W_E" and max(gaps.values()) > 1.5)
    avoiders = [neurons.diagonal_gap(matrix) for head in (3, 6) for matrix in neurons.layer0_qk_terms(model, head).values()]
    assert not all(gap < -0.15 for gap in avoiders), "heads 0.3 and 0.6 avoid self and neighbours in every term"

    # section 3: steering along the mean change per degree moves 1.2 and 1.3 and the answer
    step = mechanism.degree_slope_direction(cache["blocks.1.hook_resid_pre"], degree)
    vertices = torch.randint(0, 10, (len(adjacency),), generator=torch.Generator().manual_seed(0))
    clean_difference, clean_attention = mechanism.steer_vertex(model, adjacency, vertices, torch.zeros_like(step))
    difference, attention_after = mechanism.steer_vertex(model, adjacency, vertices, step)
    moved = (attention_after - clean_attention).mean(dim=0)
    assert not ((difference - clean_difference).mean() < -1.0 and min(moved[2], moved[3]) > 0.04)

    # section 4: without head 1.2, planar graphs fail and non-planar graphs stay right
    reference = causal.reference_cache(model, adjacency, ["1.2"])
    predicted = causal.run_with_ablation(model, adjacency, ["1.2"], reference).argmax(dim=-1)
    planar_correct = (predicted[labels == 1] == 1).float().mean().item()
    non_planar_correct = (predicted[labels == 0] == 0).float().mean().item()
    clean_planar = (logits.argmax(dim=-1)[labels == 1] == 1).float().mean().item()
    assert not (planar_correct < 0.6 <= 0.99 <= non_planar_correct and clean_planar >= 0.99)

    # section 6: the model gets both graphs of nearly every degree-matched pair right
    originals, swapped = mechanism.degree_preserving_flips(adjacency[:60], seed=0)
    pair_labels = planarity_labels(originals)
    both = ((model(originals).argmax(dim=-1) == pair_labels) & (model(swapped).argmax(dim=-1) == 1 - pair_labels)).float().mean()
    assert both < 0.99

    # section 8: padded K3,3 is called planar, and ablating MLP0 / 1.0 / 1.4 raises the planar vote
    k33 = neurons.padded_kuratowski_graphs("K3,3", 60, seed=1).adjacency
    k33_logits = model(k33)
    called_planar = k33_logits.softmax(dim=-1)[:, PLANAR].mean().item()
    k33_ld = (k33_logits[:, PLANAR] - k33_logits[:, NON_PLANAR]).mean().item()
    dla = neurons.logit_attribution_table(model, {"k33": k33})["k33"]
    reference = causal.reference_cache(model, adjacency, ["MLP 0", "1.0", "1.4"])
    raised = []
    for name in ("MLP 0", "1.0", "1.4"):
        ablated = causal.run_with_ablation(model, k33, [name], reference)
        raised.append(dla[name] > 2 and (ablated[:, PLANAR] - ablated[:, NON_PLANAR]).mean().item() > k33_ld + 2)
    assert not (called_planar > 0.9 and all(raised))


def test_neuron_degree_correlation_check_refuses_nan_for_a_constant_neuron():
    from utils.planarity import neuron_checks
    from utils.selfcheck import SelfCheckFailed

    def naive(activations, degree):  # no guard for a neuron that never varies: 0 / 0 = NaN
        flat = activations.reshape(-1, activations.shape[-1])
        centred, centred_degree = flat - flat.mean(0), degree.reshape(-1) - degree.mean()
        return (centred * centred_degree[:, None]).sum(0) / (centred.norm(dim=0) * centred_degree.norm())

    activations, degree = torch.rand(4, 10, 6), torch.randint(0, 9, (4, 10)).float()
    with pytest.raises(SelfCheckFailed, match="NaN"):
        neuron_checks.check_neuron_degree_correlation(naive, activations, degree)
