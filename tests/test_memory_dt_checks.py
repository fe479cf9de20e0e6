"""Chapter 2 self-checks: pass on the reference, fail with a useful message on wrong answers."""

from __future__ import annotations

import pytest
import torch

from utils import load_model
from utils.memory_dt import analysis, checks
from utils.memory_dt.env import CHANNEL_NAMES
from utils.memory_dt.model import fold_layer_norm
from utils.selfcheck import SelfCheckFailed


@pytest.fixture(scope="module")
def folded():
    return fold_layer_norm(load_model("memory_dt", device="cpu"))


def stub(*args):
    raise NotImplementedError()


def test_ov_circuits_check(folded):
    checks.check_ov_circuits(checks.reference_ov_circuits, folded)
    with pytest.raises(SelfCheckFailed, match="NotImplementedError"):
        checks.check_ov_circuits(stub, folded)
    output_then_value = lambda W_V, W_O: torch.einsum("lhdn,lhmd->lhnm", W_O, W_V)  # noqa: E731 - transposed
    with pytest.raises(SelfCheckFailed, match="differs"):
        checks.check_ov_circuits(output_then_value, folded)
    with pytest.raises(SelfCheckFailed, match="shape"):
        checks.check_ov_circuits(lambda W_V, W_O: torch.einsum("lhmd,lhdn->lmn", W_V, W_O), folded)


def test_directions_onto_check(folded):
    checks.check_directions_onto(checks.reference_directions_onto, folded)
    with pytest.raises(SelfCheckFailed, match="NotImplementedError"):
        checks.check_directions_onto(stub, folded)

    def unscaled(singular_values, right, readout, n):
        return right[..., :n, :] @ readout

    with pytest.raises(SelfCheckFailed, match="differs"):
        checks.check_directions_onto(unscaled, folded)

    def weakest_directions(singular_values, right, readout, n):
        return (right[..., -n:, :] * singular_values[..., -n:, None]) @ readout

    with pytest.raises(SelfCheckFailed, match="differs"):
        checks.check_directions_onto(weakest_directions, folded)

    def columns_of_vt(singular_values, right, readout, n):  # takes columns of Vᵀ: a shape error
        return (right[..., :, :n] * singular_values[..., None, :n]).transpose(-1, -2) @ readout

    with pytest.raises(SelfCheckFailed, match="raised RuntimeError.*ROWS of Vᵀ") as error:
        checks.check_directions_onto(columns_of_vt, folded)
    assert "\n" not in str(error.value)


def test_embedding_images_check(folded):
    checks.check_embedding_images(checks.reference_embedding_images, folded)
    with pytest.raises(SelfCheckFailed, match="NotImplementedError"):
        checks.check_embedding_images(stub, folded)

    def y_then_x(left, W_state, channel, n):
        return checks.reference_embedding_images(left, W_state, channel, n).transpose(-1, -2)

    with pytest.raises(SelfCheckFailed, match="differs"):
        checks.check_embedding_images(y_then_x, folded)

    def always_key(left, W_state, channel, n):
        return checks.reference_embedding_images(left, W_state, "key", n)

    with pytest.raises(SelfCheckFailed, match="'ball'"):
        checks.check_embedding_images(always_key, folded)

    def rows_of_u(left, W_state, channel, n):  # takes rows of U: a shape error
        start = CHANNEL_NAMES.index(channel) * 49
        scores = torch.einsum("fm,lhkm->lhkf", W_state[start:start + 49], left[..., :n, :])
        return scores.reshape(*scores.shape[:-1], 7, 7)

    with pytest.raises(SelfCheckFailed, match="raised RuntimeError.*COLUMNS of U") as error:
        checks.check_embedding_images(rows_of_u, folded)
    assert "\n" not in str(error.value)


def test_ov_cosine_similarity_check(folded):
    checks.check_ov_cosine_similarity(checks.reference_ov_cosine_similarity, folded)
    with pytest.raises(SelfCheckFailed, match="NotImplementedError"):
        checks.check_ov_cosine_similarity(stub, folded)

    def unnormalised(W_OV):
        flat = W_OV.flatten(0, 1).flatten(1)
        return flat @ flat.T

    with pytest.raises(SelfCheckFailed, match="differs"):
        checks.check_ov_cosine_similarity(unnormalised, folded)

    with pytest.raises(SelfCheckFailed, match="4D"):
        checks.check_ov_cosine_similarity(lambda W_OV: torch.zeros(3, 8, 3, 8), folded)


def test_ov_svd_matches_the_full_decomposition(folded):
    W_OV = checks.reference_ov_circuits(folded.W_V.detach(), folded.W_O.detach())
    left, singular_values, right = analysis.ov_svd(folded.W_V.detach(), folded.W_O.detach())
    assert torch.allclose(left @ torch.diag_embed(singular_values) @ right, W_OV, atol=1e-5)
    full = torch.linalg.svdvals(W_OV[1, 2].double())
    assert torch.allclose(full[:32].float(), singular_values[1, 2], atol=1e-5) and full[32:].max() < 1e-5
    assert (singular_values[..., :-1] >= singular_values[..., 1:]).all(), "sorted, largest first"


def test_long_data_frame_and_strongest():
    values = torch.arange(24.0).reshape(2, 3, 4)
    table = analysis.long_data_frame(values, ["head", "direction", "neuron"], labels={"head": ["A", "B"]})
    assert len(table) == 24 and list(table.columns) == ["head", "direction", "neuron", "score"]
    row = table[(table["head"] == "B") & (table.direction == 2) & (table.neuron == 1)]
    assert float(row.score.iloc[0]) == float(values[1, 2, 1])
    with pytest.raises(ValueError, match="names"):
        analysis.long_data_frame(values, ["head", "direction"])
    best = analysis.strongest(table, by=["head"], k=1)
    assert sorted(best.score.tolist()) == [0.0, 11.0, 12.0, 23.0]


def test_render_episode_and_decision_step():
    frames = analysis.render_episode(0, [2, 2, 2, 2, 0, 2])
    assert frames.shape[0] == 7 and frames.shape[-1] == 3 and frames.dtype == "uint8"
    assert not (frames[0] == frames[-1]).all()
    with pytest.raises(ValueError, match="configuration"):
        analysis.render_episode(4, [])
    assert analysis.decision_step(torch.tensor([2, 2, 2, 2, 1, 2])) == 4
    with pytest.raises(ValueError, match="never turns"):
        analysis.decision_step(torch.tensor([2, 2]))


def test_network_figure_has_one_trace_per_edge_plus_two_node_groups_and_a_colour_legend():
    import pandas as pd

    edges = pd.DataFrame({"source": ["a", "a", "b"], "target": ["x", "y", "x"], "score": [1.0, -0.5, 0.2]})
    figure = analysis.network_figure(edges, source="source", target="target")
    assert len(figure.data) == 3 + 2 + 2
    legend = {trace.name: trace.line.color for trace in figure.data[5:]}
    assert legend == {"positive score (excites)": "firebrick", "negative score (inhibits)": "royalblue"}
    colours = [trace.line.color for trace in figure.data[:3]]
    assert colours.count("royalblue") == 1


def test_random_tail_counts_check(folded):
    checks.check_random_tail_counts(checks.reference_random_tail_counts, folded)
    with pytest.raises(SelfCheckFailed, match="NotImplementedError"):
        checks.check_random_tail_counts(stub, folded)

    def one_tail(scores, size, threshold, n_samples, seed=0):  # forgets the negative tail
        generator = torch.Generator().manual_seed(seed)
        return torch.stack([(scores[torch.randperm(len(scores), generator=generator)[:size]] > threshold).float().sum()
                            for _ in range(n_samples)])

    with pytest.raises(SelfCheckFailed, match="both tails"):
        checks.check_random_tail_counts(one_tail, folded)

    def same_sample(scores, size, threshold, n_samples, seed=0):  # draws once and repeats it
        generator = torch.Generator().manual_seed(seed)
        count = (scores[torch.randperm(len(scores), generator=generator)[:size]].abs() > threshold).float().sum()
        return count.repeat(n_samples)

    with pytest.raises(SelfCheckFailed, match="same count"):
        checks.check_random_tail_counts(same_sample, folded)

    def global_generator(scores, size, threshold, n_samples, seed=0):  # ignores the seed
        return torch.stack([(scores[torch.randperm(len(scores))[:size]].abs() > threshold).float().sum()
                            for _ in range(n_samples)])

    with pytest.raises(SelfCheckFailed, match="same seed"):
        checks.check_random_tail_counts(global_generator, folded)

    def contiguous_block(scores, size, threshold, n_samples, seed=0):  # a random start, then neighbouring connections
        generator = torch.Generator().manual_seed(seed)
        starts = torch.randint(len(scores) - size, (n_samples,), generator=generator)
        return torch.stack([(scores[start:start + size].abs() > threshold).float().sum() for start in starts.tolist()])

    with pytest.raises(SelfCheckFailed, match="contiguous") as error:
        checks.check_random_tail_counts(contiguous_block, folded)
    assert "\n" not in str(error.value)

    with pytest.raises(SelfCheckFailed, match="shape"):
        checks.check_random_tail_counts(lambda scores, size, threshold, n_samples, seed=0: [0] * n_samples, folded)
