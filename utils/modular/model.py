"""The Chapter 3 architecture: a one-layer, attention + MLP HookedTransformer without LayerNorm."""

from __future__ import annotations

from typing import Any

from transformer_lens import HookedTransformer, HookedTransformerConfig

from utils.modular.data import P

DEFAULT_MODEL_CONFIG: dict[str, Any] = {
    "n_layers": 1,
    "d_model": 128,
    "n_heads": 4,
    "d_head": 32,
    "d_mlp": 512,
    "act_fn": "relu",
    "normalization_type": None,
    "d_vocab": P + 1,  # 0..p-1 and the "=" token
    "d_vocab_out": P,
    "n_ctx": 3,
    "seed": 999,
}


def build_model(model_config: dict[str, Any]) -> HookedTransformer:
    """A freshly initialised model for ``model_config`` (keys of ``HookedTransformerConfig``)."""
    config = HookedTransformerConfig(**model_config, device="cpu")
    model = HookedTransformer(config, move_to_device=False)
    # Biases stay at zero, as in the original grokking set-up: every computation is in the weights.
    for name, parameter in model.named_parameters():
        if name.split(".")[-1].startswith("b_"):
            parameter.requires_grad_(False)
    return model
