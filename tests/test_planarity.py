"""Chapter 1: the graph data, the adjacency-matrix transformer, and the training command."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import networkx as nx
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from utils import load_metrics, load_model
from utils.checkpoints import REPO_ROOT, TRAINED_MODELS_DIR, checkpoint_dir
from utils.planarity import data
from utils.planarity.model import DEFAULT_MODEL_CONFIG, PLANAR, as_adjacency_batch, build_model, predict


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model(DEFAULT_MODEL_CONFIG).eval()


def networkx_labels(adjacency: torch.Tensor) -> list[int]:
    return [int(nx.is_planar(nx.from_numpy_array(matrix.numpy()))) for matrix in adjacency]


# ------------------------------------------------------------------------------------------ data


def test_balanced_dataset_is_balanced_per_edge_count_and_deterministic():
    batch = data.balanced_dataset(240, seed=5)
    adjacency, labels, edge_counts = batch
    assert adjacency.shape == (240, 10, 10) and adjacency.dtype == torch.float32
    assert torch.equal(adjacency, adjacency.transpose(1, 2)) and not adjacency.diagonal(dim1=1, dim2=2).any()
    assert torch.equal(edge_counts, (adjacency.sum(dim=(1, 2)) / 2).long())
    for m in data.TRAIN_EDGE_COUNTS:
        at_m = edge_counts == m
        assert at_m.sum() == 40 and labels[at_m].sum() == 20
    again = data.balanced_dataset(240, seed=5)
    assert all(torch.equal(first, second) for first, second in zip(batch, again))
    assert not torch.equal(adjacency, data.balanced_dataset(240, seed=6).adjacency)
    assert 0.3 < labels[:40].float().mean() < 0.7  # shuffled, not sorted by class


def test_labels_agree_with_networkx():
    batch = data.balanced_dataset(120, seed=7)
    assert batch.labels.tolist() == networkx_labels(batch.adjacency)
    assert data.planarity_labels(batch.adjacency).tolist() == batch.labels.tolist()


def test_result_does_not_depend_on_the_number_of_workers(monkeypatch):
    # The number of workers changes how many chunks each round asks for; the graphs must not change.
    rounds: list[int] = []

    def serial(tasks, workers):
        rounds.append(len(tasks))
        return [data.draw_chunk(*task) for task in tasks]

    monkeypatch.setattr(data, "_map_chunks", serial)
    wanted = {15: (300, 20), 20: (20, 300)}
    one = data._sample_classes(wanted, seed=9, workers=1)
    rounds_one, rounds[:] = list(rounds), []
    many = data._sample_classes(wanted, seed=9, workers=7)
    assert rounds_one != rounds
    for m in wanted:
        assert all(np.array_equal(a, b) for a, b in zip(one[m][:2], many[m][:2]))
        assert [len(masks) for masks in one[m][:2]] == list(wanted[m])


def test_chunks_are_prefix_consistent():
    full_masks, full_planar = data.draw_chunk(3, 17, 2)
    masks, planar = data.draw_chunk(3, 17, 2, n_draws=30)
    assert np.array_equal(masks, full_masks[:30]) and np.array_equal(planar, full_planar[:30])
    assert (full_masks.sum(axis=1) == 17).all()


def test_validation_file_matches_its_recorded_seed():
    assert data.VALIDATION_PATH.stat().st_size < 1_000_000
    validation, metadata = data.load_graph_set(data.VALIDATION_PATH)
    assert len(validation.labels) == data.VALIDATION_SIZE
    assert metadata["chunk_draws"] == data.CHUNK_DRAWS and metadata["seed"] != data.TRAIN_SEED
    regenerated = data.balanced_dataset(data.VALIDATION_SIZE, metadata["edge_counts"], metadata["seed"])
    assert all(torch.equal(first, second) for first, second in zip(validation, regenerated))
    sample = validation.select(slice(0, 300))
    assert sample.labels.tolist() == networkx_labels(sample.adjacency)


def test_missing_or_broken_graph_files_name_the_fix(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="make-data"):
        data.load_validation_set(tmp_path / "absent.npz")
    broken = tmp_path / "broken.npz"
    broken.write_bytes(b"not an archive")
    with pytest.raises(ValueError, match="cannot be read.*make-data"):
        data.load_validation_set(broken)


@settings(max_examples=40, deadline=None)
@given(st.one_of(st.integers(max_value=0), st.floats(allow_nan=True), st.booleans(), st.text(max_size=3)))
def test_samplers_refuse_workers_that_are_not_a_positive_int(workers):
    """workers=0 or -1 used to return an empty batch; now every sampler refuses it in one line."""
    for sample in (lambda: data.balanced_dataset(12, workers=workers),
                   lambda: data.gnm_batches([15], 4, workers=workers),
                   lambda: data.planar_batch(2, workers=workers)):
        with pytest.raises(ValueError, match=r"workers must be a positive number.*workers=1") as refused:
            sample()
        assert "\n" not in str(refused.value)


def test_make_data_with_zero_workers_fails_and_leaves_the_set_alone(tmp_path: Path):
    target = tmp_path / "validation.npz"
    target.write_bytes(data.VALIDATION_PATH.read_bytes())
    result = subprocess.run(
        [sys.executable, "-m", "utils.planarity", "make-data", "--workers", "0", "--out", str(target)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2 and "--workers must be at least 1" in result.stderr
    assert "wrote" not in result.stdout
    assert target.read_bytes() == data.VALIDATION_PATH.read_bytes()


def test_validation_set_is_never_replaced_by_less_than_promised(tmp_path: Path, monkeypatch):
    target = tmp_path / "validation.npz"
    target.write_bytes(data.VALIDATION_PATH.read_bytes())
    short = data.balanced_dataset(12, seed=3)
    monkeypatch.setattr(data, "balanced_dataset", lambda *args, **kwargs: short)
    with pytest.raises(ValueError, match="expected; .* was left unchanged"):
        data.make_validation_set(target, workers=1)
    assert target.read_bytes() == data.VALIDATION_PATH.read_bytes()


def test_graph_sets_are_written_atomically(tmp_path: Path, monkeypatch):
    target = tmp_path / "set.npz"
    batch = data.balanced_dataset(12, seed=3)
    data.save_graph_set(target, batch, seed=3)
    before = target.read_bytes()

    def crash(handle, **arrays):
        handle.write(b"half a file")
        raise KeyboardInterrupt

    monkeypatch.setattr(data.np, "savez_compressed", crash)
    with pytest.raises(KeyboardInterrupt):
        data.save_graph_set(target, data.balanced_dataset(24, seed=4), seed=4)
    assert target.read_bytes() == before and [path.name for path in tmp_path.iterdir()] == ["set.npz"]


def test_gnm_batches_balanced_natural_and_the_rare_ends():
    balanced = data.gnm_batch(17, 40, seed=1)
    assert (balanced.edge_counts == 17).all() and balanced.labels.sum() == 20
    natural = data.gnm_batch(12, 300, seed=1, balanced=False)
    assert len(natural.labels) == 300 and natural.labels.float().mean() > 0.95  # G(10, 12) is mostly planar
    assert torch.equal(natural.adjacency, data.gnm_batches([11, 12], 300, seed=1)[12].adjacency)
    with pytest.raises(ValueError, match="were planar.*balanced=False"):
        data.gnm_batch(24, 20, seed=1, max_draws=2_000)
    with pytest.raises(ValueError, match="non-planar.*balanced=False"):
        data.gnm_batch(5, 10)
    with pytest.raises(ValueError, match="even n_graphs"):
        data.gnm_batch(17, 9)
    with pytest.raises(ValueError, match="multiple of 12"):
        data.balanced_dataset(100)
    with pytest.raises(ValueError, match="0 to 45 edges"):
        data.gnm_batch(46, 10, balanced=False)


def test_one_class_batches_and_named_graphs():
    planar, non_planar = data.planar_batch(30, seed=2), data.non_planar_batch(30, seed=2)
    assert networkx_labels(planar.adjacency) == [1] * 30 and networkx_labels(non_planar.adjacency) == [0] * 30
    assert sorted(set(planar.edge_counts.tolist())) == list(data.TRAIN_EDGE_COUNTS)
    named = data.named_graphs()
    labels = dict(zip(named, data.planarity_labels(torch.stack(list(named.values()))).tolist()))
    assert labels == {"petersen": 0, "cycle": 1, "complete": 0, "empty": 1, "star": 1, "path": 1,
                      "wheel": 1, "k4": 1, "k5": 0, "k33": 0, "random": labels["random"]}
    assert all(matrix.shape == (10, 10) for matrix in named.values())
    assert named["k33"].sum() == 18 and named["k33"][6:].sum() == 0  # 9 edges, padded vertices isolated


def test_graph_conversions_round_trip_and_padding_is_explicit():
    petersen = nx.petersen_graph()
    adjacency = data.adjacency_from_graph(petersen)
    assert nx.is_isomorphic(data.graph_from_adjacency(adjacency), petersen)
    with pytest.raises(ValueError, match="5 vertices.*pad=True"):
        data.adjacency_from_graph(nx.complete_graph(5))
    assert data.adjacency_from_graph(nx.complete_graph(5), pad=True)[5:].sum() == 0
    with pytest.raises(ValueError, match="to_undirected"):
        data.adjacency_from_graph(nx.DiGraph(nx.cycle_graph(10)))


def test_relabelling_keeps_the_graph():
    batch = data.balanced_dataset(120, seed=3)
    relabelled = data.relabel_vertices(batch.adjacency, torch.Generator().manual_seed(0))
    assert not torch.equal(relabelled, batch.adjacency)
    assert torch.equal(relabelled.sum(dim=(1, 2)), batch.adjacency.sum(dim=(1, 2)))
    assert torch.equal(relabelled.sum(dim=2).sort(dim=1).values, batch.adjacency.sum(dim=2).sort(dim=1).values)
    assert networkx_labels(relabelled) == batch.labels.tolist()


class ConstantModel(torch.nn.Module):
    """Always answers ``answer``: every graph of the other class is a mistake."""

    def __init__(self, answer: int):
        super().__init__()
        self.answer = answer
        self.unused = torch.nn.Parameter(torch.zeros(1))

    def forward(self, adjacency: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros(adjacency.shape[0], 2)
        logits[:, self.answer] = 1.0
        return logits


def test_misclassified_graphs_come_with_certificates():
    says_planar = data.misclassified_graphs(ConstantModel(1), n_graphs=3, seed=4)
    assert says_planar.labels.tolist() == [0, 0, 0] and len(says_planar.certificates) == 3
    for matrix, kuratowski in zip(says_planar.adjacency, says_planar.certificates):
        graph = data.graph_from_adjacency(matrix)
        assert not nx.is_planar(kuratowski) and all(graph.has_edge(*edge) for edge in kuratowski.edges)
    says_non_planar = data.misclassified_graphs(ConstantModel(0), n_graphs=2, seed=4)
    assert says_non_planar.labels.tolist() == [1, 1]
    assert all(isinstance(embedding, nx.PlanarEmbedding) for embedding in says_non_planar.certificates)


# ------------------------------------------------------------------------------------------ model


def test_output_shapes_for_one_graph_a_batch_and_networkx(model):
    batch = data.balanced_dataset(24, seed=1).adjacency
    assert model(batch).shape == (24, 2)
    assert model(batch[0]).shape == (1, 2)
    assert model(batch[0].numpy()).shape == (1, 2)
    petersen = nx.petersen_graph()
    assert torch.allclose(model(petersen), model(data.adjacency_from_graph(petersen)))
    assert predict(model, batch).shape == (24,) and set(predict(model, batch).tolist()) <= {0, 1}
    assert torch.equal(predict(model, batch), model(batch).argmax(-1))
    assert PLANAR == 1


BAD_INPUTS = {
    "wrong vertex count": (torch.zeros(2, 8, 8), r"8 vertices.*reads 10.*pad=True"),
    "not square": (torch.zeros(10, 9), r"not square"),
    "not symmetric": (torch.zeros(10, 10).index_put_((torch.tensor([0]), torch.tensor([1])), torch.tensor(1.0)),
                      r"not symmetric.*transpose"),
    "value 2": (torch.full((10, 10), 2.0).fill_diagonal_(0), r"other than 0 and 1"),
    "value 0.5": (torch.full((10, 10), 0.5).fill_diagonal_(0), r"other than 0 and 1"),
    "nan": (torch.full((10, 10), float("nan")), r"other than 0 and 1"),
    "self-loop": (torch.eye(10), r"self-loops.*diagonal"),
    "integer dtype": (torch.zeros(10, 10, dtype=torch.long), r"dtype torch.int64.*\.float\(\)"),
    "bool dtype": (torch.zeros(10, 10, dtype=torch.bool), r"dtype torch.bool.*\.float\(\)"),
    "too many dims": (torch.zeros(2, 2, 10, 10), r"shape \(2, 2, 10, 10\).*\[batch, 10, 10\]"),
    "one dim": (torch.zeros(100), r"shape \(100,\)"),
    "empty batch": (torch.zeros(0, 10, 10), r"empty"),
    "a list": ([[0] * 10] * 10, r"got list.*adjacency_from_graph"),
    "small networkx graph": (nx.complete_graph(5), r"5 vertices.*pad=True"),
    "directed graph": (nx.DiGraph(nx.cycle_graph(10)), r"simple undirected.*to_undirected"),
}


@pytest.mark.parametrize("name", list(BAD_INPUTS))
def test_bad_inputs_raise_one_line_value_errors(model, name):
    bad_input, message = BAD_INPUTS[name]
    with pytest.raises(ValueError, match=message) as error:
        model(bad_input)
    assert "\n" not in str(error.value)


def test_double_precision_is_accepted_and_cast(model):
    adjacency = data.adjacency_from_graph(nx.cycle_graph(10))
    assert torch.allclose(model(adjacency.double()), model(adjacency))
    assert as_adjacency_batch(adjacency.double()).dtype == torch.float32


def test_renaming_vertices_is_the_same_as_permuting_w_pos(model):
    # Mean-pooling over vertices and attention without a mask treat positions symmetrically, so
    # renaming vertices only changes which rows of W_E and W_pos each vertex meets.
    adjacency = data.balanced_dataset(24, seed=2).adjacency
    permutation = torch.randperm(10, generator=torch.Generator().manual_seed(1))
    renamed = adjacency[:, permutation][:, :, permutation]
    permuted_model = build_model(DEFAULT_MODEL_CONFIG).eval()
    permuted_model.load_state_dict(model.state_dict())
    with torch.no_grad():
        permuted_model.pos_embed.W_pos.copy_(model.W_pos[permutation])
        permuted_model.embed.W_E.copy_(model.W_E[permutation])
        assert torch.allclose(permuted_model(renamed), model(adjacency), atol=1e-5)
        assert not torch.allclose(model(renamed), model(adjacency), atol=1e-3)


def test_cache_hooks_and_direct_logit_attribution(model):
    adjacency = data.balanced_dataset(12, seed=4).adjacency
    model.set_use_attn_result(True)
    try:
        logits, cache = model.run_with_cache(adjacency)
    finally:
        model.set_use_attn_result(False)
    assert torch.allclose(cache["hook_embed"], adjacency @ model.W_E)
    assert torch.allclose(cache["hook_pos_embed"], model.W_pos.expand(12, 10, 128))
    assert cache["blocks.1.attn.hook_result"].shape == (12, 10, 8, 128)
    assert cache["pattern", 0].shape == (12, 8, 10, 10)
    assert torch.allclose(cache["pattern", 0].sum(-1), torch.ones(12, 8, 10))  # bidirectional, unmasked
    components = cache.get_full_resid_decomposition(expand_neurons=False)  # [component, batch, vertex, d_model]
    direct = components.sum(0).mean(dim=1) @ model.W_U + model.b_U
    assert torch.allclose(direct, logits, atol=1e-4)
    assert torch.allclose(cache["hook_pooled"], cache["blocks.1.hook_resid_post"].mean(dim=1))
    residual = model(adjacency, stop_at_layer=1)
    assert torch.allclose(model(residual, start_at_layer=1), logits, atol=1e-5)


def test_build_model_is_seeded_and_uses_the_recipe_init():
    first, second = build_model(DEFAULT_MODEL_CONFIG), build_model(DEFAULT_MODEL_CONFIG)
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), second.state_dict().values()))
    assert 0.8 < first.W_pos.std().item() < 1.2
    assert first.W_E.abs().max().item() <= 10 ** -0.5
    assert first.W_Q.std().item() == pytest.approx(0.8 / 128**0.5, rel=0.1)
    other = build_model(dict(DEFAULT_MODEL_CONFIG, seed=1))
    assert not torch.equal(first.W_pos, other.W_pos)
    with pytest.raises(ValueError, match="d_vocab == n_ctx"):
        build_model(dict(DEFAULT_MODEL_CONFIG, n_ctx=12))


# ------------------------------------------------------------------------------------------ training

TINY = ["--epochs", "2", "--train-size", "144", "--batch-size", "64", "--eval-graphs", "12",
        "--resume-every", "1", "--device", "cpu", "--workers", "1"]


def test_tiny_training_writes_a_loadable_checkpoint_and_resumes_exactly(tmp_path: Path):
    out, run_dir = tmp_path / "model", tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "-m", "utils.planarity", "train", *TINY, "--out", str(out), "--run-dir", str(run_dir)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    model = load_model("planarity", device="cpu", directory=out)
    assert model.cfg.n_layers == 2 and model.cfg.attention_dir == "bidirectional" and not model.training
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["gnm_accuracy_by_edge_count"]) == {str(m) for m in range(11, 25)}
    assert metrics["epochs_trained"] == 2 and metrics["device"] == "cpu"
    assert 0.0 <= metrics["validation_accuracy"] <= 1.0
    assert [row["epoch"] for row in json.loads((out / "training_log.json").read_text())] == [1, 2]
    # The resumable state from epoch 1 is still there: a rerun continues from it to the same weights.
    from utils.planarity.train import parse_args, train

    resumed_out = tmp_path / "resumed"
    train(parse_args([*TINY, "--out", str(resumed_out), "--run-dir", str(run_dir)]))
    resumed = load_model("planarity", device="cpu", directory=resumed_out)
    for (name, weight), resumed_weight in zip(model.state_dict().items(), resumed.state_dict().values()):
        assert torch.allclose(weight, resumed_weight, atol=1e-4), name  # thread count can change float sums slightly
    with pytest.raises(SystemExit, match="different settings.*--fresh"):
        train(parse_args([*TINY, "--lr", "0.01", "--out", str(resumed_out), "--run-dir", str(run_dir)]))


def test_command_without_subcommand_prints_usage():
    result = subprocess.run([sys.executable, "-m", "utils.planarity"], cwd=REPO_ROOT, capture_output=True, text=True)
    assert result.returncode != 0 and "usage: python -m utils.planarity {train,make-data}" in result.stderr


# ------------------------------------------------------------------------------------------ shipped model

needs_checkpoint = pytest.mark.skipif(
    not checkpoint_dir("planarity").exists(), reason="trained_models/planarity not trained yet"
)


@needs_checkpoint
def test_shipped_model_reaches_the_floor_and_matches_its_metrics():
    model = load_model("planarity", device="cpu")
    metrics = load_metrics("planarity")
    validation = data.load_validation_set()
    accuracy = (predict(model, validation.adjacency) == validation.labels).float().mean().item()
    assert accuracy >= 0.995
    assert accuracy == pytest.approx(metrics["validation_accuracy"], abs=1e-4)
    assert metrics["relabelling_agreement"] >= 0.99


def test_the_bare_training_command_uses_the_shipped_checkpoints_recipe():
    """`python -m utils.planarity train` with no flags trains with the recipe recorded beside the shipped weights."""
    from utils.planarity.train import DEFAULT_TRAINING_CONFIG, parse_args

    shipped = json.loads((TRAINED_MODELS_DIR / "planarity" / "config.json").read_text())
    for key, value in DEFAULT_TRAINING_CONFIG.items():
        assert shipped["training"][key] == value, f"training default {key}={value!r}, shipped checkpoint used {shipped['training'][key]!r}"
    assert shipped["model"] == DEFAULT_MODEL_CONFIG
    arguments = parse_args([])
    assert (arguments.epochs, arguments.batch_size, arguments.lr) == (
        shipped["training"]["epochs"], shipped["training"]["batch_size"], shipped["training"]["lr"])
