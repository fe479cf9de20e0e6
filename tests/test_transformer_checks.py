"""Notebook 3.3's self-checks: pass on the reference, fail with a useful message on the stub and on typical mistakes."""

from __future__ import annotations

import pytest
import torch

from utils import load_model
from utils.modular import transformer_checks as checks
from utils.selfcheck import SelfCheckFailed


@pytest.fixture(scope="module")
def model():
    with torch.no_grad():
        yield load_model("modular_addition", device="cpu")


def stub(*args):
    raise NotImplementedError()


def test_head_results_check(model):
    checks.check_head_results(lambda z, W_O: torch.einsum("bphd,hdm->bphm", z, W_O), model)
    with pytest.raises(SelfCheckFailed, match="NotImplementedError"):
        checks.check_head_results(stub, model)
    with pytest.raises(SelfCheckFailed, match="sum over heads"):
        checks.check_head_results(lambda z, W_O: torch.einsum("bphd,hdm->bpm", z, W_O), model)
    with pytest.raises(SelfCheckFailed, match="differs"):  # heads paired with the wrong W_O[h]
        checks.check_head_results(lambda z, W_O: torch.einsum("bphd,hdm->bphm", z, W_O.flip(0)), model)
    with pytest.raises(SelfCheckFailed, match="differs"):  # b_O-like offset added to every head
        checks.check_head_results(lambda z, W_O: torch.einsum("bphd,hdm->bphm", z, W_O) + 0.1, model)


def test_attention_scores_check(model):
    def reference(q, k):
        scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / q.shape[-1] ** 0.5
        return scores.masked_fill(torch.ones(3, 3, dtype=torch.bool).triu(1), float("-inf"))

    checks.check_attention_scores(reference, model)
    with pytest.raises(SelfCheckFailed, match="NotImplementedError"):
        checks.check_attention_scores(stub, model)
    with pytest.raises(SelfCheckFailed, match="masks the wrong entries"):  # no mask
        checks.check_attention_scores(lambda q, k: torch.einsum("bqhd,bkhd->bhqk", q, k) / 32 ** 0.5, model)
    with pytest.raises(SelfCheckFailed, match="masks the wrong entries"):  # mask the wrong way round
        checks.check_attention_scores(lambda q, k: (torch.einsum("bqhd,bkhd->bhqk", q, k) / 32 ** 0.5).masked_fill(
            torch.ones(3, 3, dtype=torch.bool).tril(-1), float("-inf")), model)
    with pytest.raises(SelfCheckFailed, match="too large"):  # no 1/sqrt(d_head)
        checks.check_attention_scores(lambda q, k: reference(q, k) * 32 ** 0.5, model)
    with pytest.raises(SelfCheckFailed, match="differs"):  # queries and keys swapped
        checks.check_attention_scores(lambda q, k: reference(k, q), model)
    with pytest.raises(SelfCheckFailed, match="shape"):  # head axis left where q has it
        checks.check_attention_scores(lambda q, k: reference(q, k).transpose(1, 2), model)


def test_mlp_input_edit_check(model):
    def reference(model, tokens, direction):
        return model.run_with_hooks(tokens, fwd_hooks=[
            ("blocks.0.hook_resid_mid", lambda x, hook: x + direction),
            ("blocks.0.hook_resid_post", lambda x, hook: x - direction),
        ])

    def through_mlp_pre(model, tokens, direction):  # another right answer: edit the MLP's pre-activations
        shift = direction @ model.blocks[0].mlp.W_in
        return model.run_with_hooks(tokens, fwd_hooks=[("blocks.0.mlp.hook_pre", lambda x, hook: x + shift)])

    checks.check_mlp_input_edit(reference, model)
    checks.check_mlp_input_edit(through_mlp_pre, model)
    with pytest.raises(SelfCheckFailed, match="NotImplementedError"):
        checks.check_mlp_input_edit(stub, model)
    with pytest.raises(SelfCheckFailed, match="also reached the residual stream"):
        checks.check_mlp_input_edit(lambda model, tokens, direction: model.run_with_hooks(
            tokens, fwd_hooks=[("blocks.0.hook_resid_mid", lambda x, hook: x + direction)]), model)
    with pytest.raises(SelfCheckFailed, match="clean logits"):
        checks.check_mlp_input_edit(lambda model, tokens, direction: model(tokens), model)
    with pytest.raises(SelfCheckFailed, match="differs"):  # the edit made at the wrong place
        checks.check_mlp_input_edit(lambda model, tokens, direction: model.run_with_hooks(
            tokens, fwd_hooks=[("blocks.0.hook_resid_pre", lambda x, hook: x + direction)]), model)
    assert not model.hook_dict["blocks.0.hook_resid_mid"].fwd_hooks, "a check must leave no hooks behind"
