"""The course's own transformer (utils/transformer.py): TransformerLens's names and arithmetic, on any major."""

from __future__ import annotations

import importlib.metadata

import pytest
import torch
from transformer_lens import ActivationCache, FactoredMatrix

import utils  # noqa: F401 - silences TransformerLens's deprecation warnings
from utils.transformer import HookedTransformer, TransformerConfig

TL_MAJOR = int(importlib.metadata.version("transformer-lens").split(".")[0])
needs_tl3 = pytest.mark.skipif(TL_MAJOR >= 4, reason="TransformerLens 4 has no HookedTransformer to compare with")

SMALL = dict(n_layers=2, d_model=32, n_heads=4, d_head=8, d_mlp=48, d_vocab=11, n_ctx=6, seed=3)


@pytest.fixture(autouse=True)
def no_grad():
    with torch.no_grad():
        yield


def layernorm_model(d_mlp: int = 48, **changes) -> HookedTransformer:
    """A random model whose LayerNorm weights are far from 1 and 0 (so folding them is a real test)."""
    model = HookedTransformer(TransformerConfig(**dict(SMALL, d_mlp=d_mlp, normalization_type="LN", **changes)))
    generator = torch.Generator().manual_seed(0)
    for name, parameter in model.named_parameters():
        if name.endswith(".w"):
            parameter.copy_(1 + 0.5 * torch.randn(parameter.shape, generator=generator))
        elif name.endswith(".b") or name.split(".")[-1].startswith("b_"):
            parameter.copy_(0.3 * torch.randn(parameter.shape, generator=generator))
    return model.eval()


def tokens(batch: int = 5) -> torch.Tensor:
    return torch.randint(0, SMALL["d_vocab"], (batch, SMALL["n_ctx"]), generator=torch.Generator().manual_seed(1))


def test_config_rejects_bad_fields_with_one_line_value_errors():
    with pytest.raises(ValueError, match="unknown transformer config keys \\['n_layer'\\]"):
        TransformerConfig.from_dict(dict(SMALL, n_layer=2))
    with pytest.raises(ValueError, match="act_fn"):
        TransformerConfig(**dict(SMALL, act_fn="swish"))
    with pytest.raises(ValueError, match="normalization_type"):
        TransformerConfig(**dict(SMALL, normalization_type="RMS"))
    with pytest.raises(ValueError, match="attention_dir"):
        TransformerConfig(**dict(SMALL, attention_dir="sideways"))
    config = TransformerConfig(**SMALL)
    assert config.d_vocab_out == SMALL["d_vocab"] and config.attn_scale == pytest.approx(8 ** 0.5)


@needs_tl3
@pytest.mark.parametrize("changes", [
    dict(normalization_type=None, act_fn="relu"),
    dict(normalization_type="LN", act_fn="gelu", attention_dir="bidirectional"),
    dict(normalization_type="LNPre", act_fn="relu", use_attn_result=True),
])
def test_same_weights_hooks_and_outputs_as_transformer_lens_3(changes):
    """Same seed, same weights; same hook names firing in the same order; same activations, bit for bit."""
    from transformer_lens import HookedTransformer as LibraryTransformer
    from transformer_lens import HookedTransformerConfig

    ours = HookedTransformer(TransformerConfig(**dict(SMALL, **changes)))
    theirs = LibraryTransformer(HookedTransformerConfig(**dict(SMALL, **changes), device="cpu"))
    assert list(ours.state_dict()) == list(theirs.state_dict())
    for key, value in theirs.state_dict().items():
        assert torch.equal(ours.state_dict()[key], value), key
    our_logits, our_cache = ours.run_with_cache(tokens())
    their_logits, their_cache = theirs.run_with_cache(tokens())
    assert list(our_cache) == list(their_cache)
    assert torch.equal(our_logits, their_logits)
    for name in their_cache:
        assert torch.equal(our_cache[name], their_cache[name]), name


def test_fold_layer_norm_keeps_the_outputs_when_d_mlp_equals_d_model():
    for d_mlp in (32, 48):  # d_model is 32
        model = layernorm_model(d_mlp)
        folded = model.fold_layer_norm()
        assert folded.cfg.normalization_type == "LNPre" and not any(key.endswith(".w") for key in folded.state_dict())
        expected = model(tokens()).log_softmax(-1)
        assert (folded(tokens()).log_softmax(-1) - expected).abs().max() < 1e-4
        plain = model.fold_layer_norm(center_writing_weights=False, center_unembed=False, fold_value_biases=False)
        assert (plain(tokens()) - model(tokens())).abs().max() < 1e-4  # without centring W_U, logits stay too
    with pytest.raises(ValueError, match="already folded"):
        model.fold_layer_norm().fold_layer_norm()


def test_activation_cache_helpers_work_on_it():
    model = layernorm_model()
    logits, cache = model.run_with_cache(tokens())
    assert isinstance(cache, ActivationCache)
    # The final residual stream, split into its pieces, rebuilt, normalised by ln_final's cached scale
    # (apply_ln_to_stack reads ln_final.hook_scale) and unembedded, gives the logits.
    pieces = cache.decompose_resid(layer=-1)
    assert torch.allclose(pieces.sum(0), cache["resid_post", 1], atol=1e-5)
    normalised = cache.apply_ln_to_stack(pieces, layer=-1).sum(0)
    rebuilt = normalised * model.ln_final.w + model.ln_final.b
    assert torch.allclose(rebuilt @ model.W_U + model.b_U, logits, atol=1e-4)
    # Every head, neuron, embedding and the accumulated biases add up to the residual stream too.
    full = cache.get_full_resid_decomposition(expand_neurons=True)
    assert full.shape[0] == 2 * 4 + 2 * 48 + 3
    assert torch.allclose(full.sum(0), cache["resid_post", 1], atol=1e-4)
    heads = cache.stack_head_results(layer=-1)
    assert torch.allclose(heads.sum(0) + model.b_O.sum(0), cache["attn_out", 0] + cache["attn_out", 1], atol=1e-4)
    _, plain = model.run_with_cache(tokens(1), return_cache_object=False, remove_batch_dim=True)
    assert isinstance(plain, dict) and plain["blocks.0.hook_resid_pre"].shape == (6, 32)


def test_attn_result_switch_changes_only_what_is_cached():
    model = layernorm_model()
    clean, cache = model.run_with_cache(tokens())
    assert "blocks.0.attn.hook_result" not in cache
    model.set_use_attn_result(True)
    with_results, results = model.run_with_cache(tokens())
    model.set_use_attn_result(False)
    assert torch.allclose(with_results, clean, atol=1e-5)
    assert torch.allclose(results["result", 0].sum(2) + model.blocks[0].attn.b_O, cache["attn_out", 0], atol=1e-5)


def test_causal_attention_hides_later_positions_and_hooks_edit_the_computation():
    model = layernorm_model()
    _, cache = model.run_with_cache(tokens())
    pattern = cache["pattern", 0]
    assert torch.equal(pattern.triu(1), torch.zeros_like(pattern)) and torch.allclose(pattern.sum(-1), torch.ones(()))
    assert torch.isinf(cache["attn_scores", 0].triu(1)[..., 0, 1]).all()
    direction = torch.randn(32, generator=torch.Generator().manual_seed(2))

    def edit(resid, hook):  # move the last position's residual stream into block 1 ...
        resid = resid.clone()
        resid[:, -1] += direction
        return resid

    edited = model.run_with_hooks(tokens(), fwd_hooks=[("blocks.1.hook_resid_pre", edit)])
    assert torch.allclose(edited[:, :-1], model(tokens())[:, :-1])  # ... earlier positions cannot see it
    assert not torch.allclose(edited[:, -1], model(tokens())[:, -1])


def test_forward_in_pieces_and_its_errors():
    model = layernorm_model()
    residual = model(tokens(), stop_at_layer=1)
    assert torch.allclose(model(residual, start_at_layer=1), model(tokens()), atol=1e-5)
    assert model(tokens(), return_type=None) is None
    assert model(tokens()[0]).shape == (1, 6, 11)  # one input without a batch axis
    with pytest.raises(ValueError, match="return_type"):
        model(tokens(), return_type="loss")


def test_weights_are_stacked_and_factored_as_in_transformer_lens():
    model = layernorm_model()
    assert model.W_Q.shape == (2, 4, 32, 8) and model.W_O.shape == (2, 4, 8, 32) and model.W_in.shape == (2, 32, 48)
    assert model.b_out.shape == (2, 32) and model.W_E.shape == (11, 32) and model.W_pos.shape == (6, 32)
    assert isinstance(model.OV, FactoredMatrix) and isinstance(model.blocks[0].attn.QK, FactoredMatrix)
    assert torch.allclose(model.OV.AB[1, 2], model.W_V[1, 2] @ model.W_O[1, 2])
    assert torch.allclose(model.QK.AB[0, 3], model.W_Q[0, 3] @ model.W_K[0, 3].T)
    assert torch.allclose(model.accumulated_bias(2), model.b_O.sum(0) + model.b_out.sum(0))
    assert torch.allclose(model.accumulated_bias(1, mlp_input=True, include_mlp_biases=False), model.b_O.sum(0))
    model.to("cpu")
    assert str(model.cfg.device) == "cpu"
