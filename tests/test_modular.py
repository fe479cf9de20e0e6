"""Chapter 3: the task, the reference Fourier analysis, and the training command."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from utils import load_metrics, load_model
from utils.checkpoints import REPO_ROOT
from utils.modular import fourier, load_training_log
from utils.modular.data import P, all_pairs, labels_for, train_test_split
from utils.modular.model import DEFAULT_MODEL_CONFIG, build_model


def test_all_pairs_order_and_labels():
    tokens = all_pairs(P)
    assert tokens.shape == (P * P, 3)
    assert (tokens[:, 2] == P).all()
    assert tokens[5 * P + 7].tolist() == [5, 7, P]
    assert labels_for(tokens)[5 * P + 110].item() == (5 + 110) % P


def test_split_is_deterministic_disjoint_and_complete():
    train, test = train_test_split(P, 0.3, seed=598)
    again, _ = train_test_split(P, 0.3, seed=598)
    other, _ = train_test_split(P, 0.3, seed=1)
    assert torch.equal(train, again) and not torch.equal(train, other)
    assert len(train) == int(0.3 * P * P)
    assert len(set(train.tolist()) | set(test.tolist())) == P * P
    assert not set(train.tolist()) & set(test.tolist())
    with pytest.raises(ValueError, match="between 0 and 1"):
        train_test_split(P, 1.5)


@pytest.mark.parametrize("p", [5, 113])
def test_fourier_basis_is_orthonormal_with_named_rows(p: int):
    basis, names = fourier.fourier_basis(p)
    assert torch.allclose(basis @ basis.T, torch.eye(p), atol=1e-5)
    assert names[:3] == ["const", "cos 1", "sin 1"] and len(names) == p
    x = torch.arange(p)
    assert torch.allclose(basis[3], torch.cos(2 * math.pi * 2 * x / p) / math.sqrt(p / 2), atol=1e-5)


def test_fourier_basis_rejects_even_p():
    with pytest.raises(ValueError, match="odd p"):
        fourier.fourier_basis(10)


def test_frequency_fractions_find_a_planted_frequency():
    a = torch.arange(P, dtype=torch.float32)[:, None]
    b = torch.arange(P, dtype=torch.float32)[None, :]
    planted = torch.cos(2 * math.pi * 17 * (a + b) / P) + 0.5 * torch.sin(2 * math.pi * 17 * a / P) + 3.0
    noise = torch.cos(2 * math.pi * 40 * b / P)
    fractions = fourier.neuron_frequency_fractions(torch.stack([planted, planted + noise], dim=-1))
    assert fractions[0].argmax().item() + 1 == 17
    assert fractions[0, 16].item() == pytest.approx(1.0, abs=1e-4)
    assert fractions[1, 16].item() == pytest.approx(0.625 / 1.125, abs=1e-3)  # mean squares: 0.5 + 0.125 of 1.125


def test_split_logits_keeps_the_sum_patterns_and_removes_the_rest():
    a = torch.arange(P, dtype=torch.float32)[:, None, None]
    b = torch.arange(P, dtype=torch.float32)[None, :, None]
    c = torch.arange(P, dtype=torch.float32)[None, None, :]
    along_key = torch.cos(2 * math.pi * 5 * (a + b - c) / P)
    elsewhere = torch.cos(2 * math.pi * 9 * (a - c) / P).expand(P, P, P)
    restricted, excluded = fourier.split_logits(along_key + elsewhere, [5])
    assert torch.allclose(restricted, along_key, atol=1e-3)
    assert torch.allclose(excluded, elsewhere, atol=1e-3)


def test_shipped_model_is_grokked_and_matches_its_metrics():
    model = load_model("modular_addition", device="cpu")
    metrics = load_metrics("modular_addition")
    with torch.no_grad():
        logits = model(all_pairs(P))[:, -1, :]
    assert (logits.argmax(-1) == labels_for(all_pairs(P))).all()
    assert fourier.key_frequencies(model) == metrics["key_frequencies"]
    _, test = train_test_split(P)
    test_loss = fourier.cross_entropy(logits[test], labels_for(all_pairs(P))[test]).item()
    assert test_loss < 1e-6 and test_loss == pytest.approx(metrics["test_loss"], rel=0.05)
    log = load_training_log()
    assert log["losses"][-1]["test_loss"] < 1e-5 < log["losses"][0]["test_loss"]
    assert [row["epoch"] for row in log["progress_measures"]] == sorted(row["epoch"] for row in log["progress_measures"])


def _train(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "utils.modular", "train", "--device", "cpu", *args],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
    )


def test_training_command_tiny_budget_writes_a_loadable_checkpoint_and_resumes(tmp_path: Path):
    out, run_dir = tmp_path / "model", tmp_path / "run"
    first = _train("--max-epochs", "10", "--resume-every", "5", "--out", str(out), "--run-dir", str(run_dir))
    assert first.returncode == 0, first.stderr[-2000:]
    assert (run_dir / "resume.pt").exists()
    model = load_model("modular_addition", device="cpu", directory=out)
    assert model.cfg.d_mlp == 512
    log = json.loads((out / "training_log.json").read_text())
    assert [row["epoch"] for row in log["losses"]] == [1]
    second = _train("--max-epochs", "15", "--resume-every", "5", "--out", str(out), "--run-dir", str(run_dir))
    assert second.returncode == 0, second.stderr[-2000:]
    assert "resuming from epoch 10" in second.stdout
    assert json.loads((out / "metrics.json").read_text())["epochs_trained"] == 15


def test_training_command_without_subcommand_prints_usage():
    result = subprocess.run([sys.executable, "-m", "utils.modular"], cwd=REPO_ROOT, capture_output=True, text=True)
    assert result.returncode != 0 and "usage: python -m utils.modular train" in result.stderr


# --------------------------------------------------------------------------------------------
# Bad inputs: one-line errors naming the fix, never a silent answer or a TransformerLens traceback


@pytest.fixture(scope="module")
def shipped_model():
    return load_model("modular_addition", device="cpu")


BAD_TOKENS = {
    "minus one (was read as '=')": (torch.tensor([[5, -1, P]]), r"a and b must be numbers 0\.\.112.*got -1"),
    "a, =, =": (torch.tensor([[5, P, P]]), r"got 113; put '=' only in the third place"),
    "length 2": (torch.tensor([[5, 7]]), r"3 tokens \[a, b, =\], got length 2"),
    "length 4": (torch.tensor([[5, 7, P, 1]]), r"got length 4"),
    "token 114": (torch.tensor([[114, 7, P]]), r"got 114"),
    "token 10_000": (torch.tensor([[1, 10_000, P]]), r"got 10000"),
    "float tokens": (torch.tensor([[5.0, 7.0, 113.0]]), r"integer ids, got dtype torch.float32; convert with tokens.long\(\)"),
    "no '=' at the end": (torch.tensor([[5, 7, 8]]), r"third token must be '=' \(id 113\), got 8"),
    "three axes": (torch.zeros(2, 2, 3, dtype=torch.long), r"shape \[batch, 3\] or \[3\]"),
    "a string": ("5 + 7 =", r"tensor of token ids"),
    "a list": ([[5, 7, P]], r"tensor of token ids.*torch.tensor"),
}


@pytest.mark.parametrize("tokens, message", BAD_TOKENS.values(), ids=BAD_TOKENS.keys())
def test_model_refuses_bad_tokens_in_one_line(shipped_model, tokens, message):
    for call in (shipped_model, shipped_model.run_with_cache):
        with pytest.raises(ValueError, match=message) as refused:
            call(tokens)
        assert "\n" not in str(refused.value)


def test_model_accepts_one_input_a_batch_and_a_residual_stream(shipped_model):
    one = shipped_model(torch.tensor([5, 7, P]))
    batch = shipped_model(torch.tensor([[5, 7, P], [100, 20, P]], dtype=torch.int32))
    assert one.shape == (1, 3, P) and batch[:, -1].argmax(-1).tolist() == [12, 7]
    residual = shipped_model(torch.tensor([[5, 7, P]]), stop_at_layer=0)
    assert shipped_model(residual, start_at_layer=0)[:, -1].argmax(-1).item() == 12


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(-3, 118), st.integers(-3, 118), st.integers(-3, 118)), min_size=1, max_size=6))
def test_model_accepts_exactly_the_well_formed_inputs(shipped_model, rows):
    tokens = torch.tensor(rows)
    valid = all(0 <= a < P and 0 <= b < P and equals == P for a, b, equals in rows)
    try:
        logits = shipped_model(tokens)
    except ValueError as error:
        assert not valid and "\n" not in str(error)
    else:
        assert valid and logits[:, -1].argmax(-1).tolist() == [(a + b) % P for a, b, _ in rows]


FOURIER_MISTAKES = {
    "frequency 0 (was NaN everywhere)": (lambda: fourier.sum_direction_basis([0]), r"frequency 0 is the constant.*1\.\.56"),
    "empty list (was a stack error)": (lambda: fourier.split_logits(torch.zeros(P, P, P), []), r"frequencies is empty"),
    "aliased frequency": (lambda: fourier.sum_direction_basis([14, 99]), r"frequency 99 is outside 1\.\.56; it is the same wave as 14"),
    "duplicate frequency": (lambda: fourier.sum_direction_basis([14, 14]), r"frequency 14 is listed twice"),
    "negative frequency": (lambda: fourier.frequency_components(-3), r"outside 1\.\.56; it is the same wave as 3"),
    "float frequency": (lambda: fourier.sum_direction_basis([14.0]), r"ints in 1\.\.56"),
    "W_E with the '=' row": (lambda: fourier.embedding_frequency_norms(torch.zeros(P + 1, 128)), r"114 rows.*pass model.W_E\[:-1\]"),
    "wrong number of rows": (lambda: fourier.embedding_frequency_norms(torch.zeros(50, 128)), r"113 rows\), got 50"),
    "flat logits": (lambda: fourier.split_logits(torch.zeros(P * P, P), [14]), r"shape \[113, 113, c\].*einops"),
    "flat activations": (lambda: fourier.neuron_frequency_fractions(torch.zeros(P * P, 4)), r"shape \[113, 113, neuron\]"),
    "even p": (lambda: fourier.fourier_basis(10), r"odd p >= 3"),
    "p = 1": (lambda: fourier.fourier_basis(1), r"odd p >= 3"),
}


@pytest.mark.parametrize("call, message", FOURIER_MISTAKES.values(), ids=FOURIER_MISTAKES.keys())
def test_fourier_helpers_refuse_mistakes_in_one_line(call, message):
    with pytest.raises(ValueError, match=message) as refused:
        call()
    assert "\n" not in str(refused.value)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(-200, 300), max_size=6))
def test_frequency_lists_are_accepted_exactly_when_distinct_and_in_range(frequencies):
    valid = bool(frequencies) and len(set(frequencies)) == len(frequencies) and all(1 <= k <= P // 2 for k in frequencies)
    try:
        directions = fourier.sum_direction_basis(frequencies)
    except ValueError as error:
        assert not valid and "\n" not in str(error)
        assert any(fix in str(error) for fix in ("use frequencies in 1..56", "listed twice", "is empty"))
    else:
        assert valid and directions.shape == (2 * len(frequencies), P, P) and torch.isfinite(directions).all()
        gram = directions.flatten(1) @ directions.flatten(1).T
        assert torch.allclose(gram, torch.eye(len(gram)), atol=1e-4)  # orthonormal: no alias slipped through


def test_final_position_logits_match_the_hooked_forward(shipped_model):
    """The training loop's fast forward computes what the hooked model computes at '='."""
    from utils.modular.model import final_position_logits

    tokens = all_pairs(P)[::7]
    hooked = shipped_model(tokens)[:, -1, :]
    fast = final_position_logits(shipped_model, tokens)
    assert torch.allclose(fast, hooked, atol=1e-4, rtol=1e-5), float((fast - hooked).abs().max())
    untrained = build_model(DEFAULT_MODEL_CONFIG)
    assert torch.allclose(final_position_logits(untrained, tokens), untrained(tokens)[:, -1, :], atol=1e-5)


@torch.no_grad()
def test_final_position_run_gives_the_hooked_neurons_and_logits(shipped_model):
    from utils.modular.model import final_position_run

    tokens = all_pairs(P)[::37]
    logits, neurons = final_position_run(shipped_model, tokens)
    hooked_logits, cache = shipped_model.run_with_cache(tokens, names_filter="blocks.0.mlp.hook_post")
    assert torch.allclose(neurons, cache["blocks.0.mlp.hook_post"][:, -1], atol=1e-4)
    assert torch.allclose(logits, hooked_logits[:, -1], atol=1e-3)
