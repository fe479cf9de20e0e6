"""The Chapter 3 architecture: a one-layer, attention + MLP transformer without LayerNorm.

Built on the course's own transformer (:mod:`utils.transformer`), which has TransformerLens's
parameter and hook names, so ``run_with_cache``, ``run_with_hooks``, ``model.W_E`` and
``blocks[0].attn.W_Q`` work as with a TransformerLens ``HookedTransformer``.
"""

from __future__ import annotations

from typing import Any, Optional, Union

import torch
from jaxtyping import Float, Int
from torch import Tensor

from utils.modular.data import P
from utils.transformer import HookedTransformer, TransformerConfig

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


class ModularAdditionTransformer(HookedTransformer):
    """A :class:`~utils.transformer.HookedTransformer` that reads ``[a, b, =]`` and checks that it
    was given exactly that.

    Calling it (or ``run_with_cache`` / ``run_with_hooks``) with token ids checks them first and
    raises a one-line ``ValueError`` instead of a silent wrong answer (``-1`` would be read as
    ``=``, ``[a, =, =]`` and length 2 would run) or an error deep inside the model (ids
    ``>= 114``, length 4, float tokens). A residual stream (``start_at_layer=...``) is not checked.
    """

    def forward(  # type: ignore[override]
        self,
        input: Any,
        return_type: Optional[str] = "logits",
        start_at_layer: Optional[int] = None,
        stop_at_layer: Optional[int] = None,
        check_input: bool = True,
    ) -> Union[None, Tensor]:
        """Logits ``[batch, 3, p]`` for tokens ``[batch, 3]`` (see ``HookedTransformer.forward``);
        ``check_input=False`` skips the check (the training loop, whose inputs are known good)."""
        if check_input and start_at_layer is None:
            check_tokens(input, p=self.cfg.d_vocab_out)
        return super().forward(input, return_type, start_at_layer, stop_at_layer)


def check_tokens(tokens: Any, p: int = P) -> None:
    """Raise ``ValueError`` unless ``tokens`` is an integer tensor ``[batch, 3]`` (or ``[3]``) of
    inputs ``[a, b, =]`` with ``a, b`` in ``0 .. p-1`` and ``=`` the id ``p``."""
    example = f"e.g. torch.tensor([[5, 7, {p}]]) or utils.modular.data.all_pairs()"
    if isinstance(tokens, (str, list, tuple)):
        raise ValueError(f"the model takes a tensor of token ids [a, b, =], not {type(tokens).__name__}; pass {example}")
    if not isinstance(tokens, Tensor):
        raise ValueError(f"tokens must be a torch tensor of ids [a, b, =], got {type(tokens).__name__}; pass {example}")
    if tokens.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
        raise ValueError(f"tokens must be integer ids, got dtype {tokens.dtype}; convert with tokens.long()")
    if tokens.ndim not in (1, 2):
        raise ValueError(f"tokens must have shape [batch, 3] or [3], got {tuple(tokens.shape)}; pass {example}")
    if tokens.shape[-1] != 3:
        raise ValueError(
            f"each input is 3 tokens [a, b, =], got length {tokens.shape[-1]} (shape {tuple(tokens.shape)}); pass {example}"
        )
    if tokens.numel() == 0:
        return
    numbers, equals = tokens[..., :2], tokens[..., 2]
    if int(numbers.min()) < 0 or int(numbers.max()) >= p:
        bad = numbers[(numbers < 0) | (numbers >= p)]
        raise ValueError(
            f"a and b must be numbers 0..{p - 1} ({p} is '='), got {int(bad[0])}; put '=' only in the third place, "
            f"and reduce numbers mod {p}"
        )
    if bool((equals != p).any()):
        raise ValueError(f"the third token must be '=' (id {p}), got {int(equals[equals != p][0])}; inputs are [a, b, {p}]")


def final_position_logits(
    model: HookedTransformer, tokens: Int[Tensor, "batch 3"]
) -> Float[Tensor, "batch p"]:
    """The logits at ``=`` (the only position the loss reads), computed without the hooks.

    The same arithmetic as ``model(tokens)[:, -1]`` (attention from ``=`` to all three positions,
    the MLP and the unembedding at ``=`` only), about 2.5 times faster because the MLP does not
    run at the positions of ``a`` and ``b``, whose outputs a one-layer model never reads. The
    training loop uses it; ``tests/test_modular.py`` checks it against the hooked forward.
    """
    return final_position_run(model, tokens)[0]


def final_position_run(
    model: HookedTransformer, tokens: Int[Tensor, "batch 3"]
) -> tuple[Float[Tensor, "batch p"], Float[Tensor, "batch d_mlp"]]:
    """The logits at ``=`` and the post-ReLU neuron activations there, without the hooks.

    The same numbers as ``model.run_with_cache(tokens)`` gives for ``[:, -1]`` of the logits and of
    ``blocks.0.mlp.hook_post``, about 2.5 times faster (see :func:`final_position_logits`); notebook 3.2
    runs it once per training snapshot.
    """
    block = model.blocks[0]
    attention = block.attn
    residual = model.embed.W_E[tokens] + model.pos_embed.W_pos[None, : tokens.shape[1]]  # [batch pos d_model]
    query = torch.einsum("bd,hde->bhe", residual[:, -1], attention.W_Q) + attention.b_Q
    keys = torch.einsum("bpd,hde->bphe", residual, attention.W_K) + attention.b_K
    values = torch.einsum("bpd,hde->bphe", residual, attention.W_V) + attention.b_V
    pattern = (torch.einsum("bhe,bphe->bhp", query, keys) / attention.attn_scale).softmax(dim=-1)
    head_z = torch.einsum("bhp,bphe->bhe", pattern, values)
    residual_mid = residual[:, -1] + torch.einsum("bhe,hed->bd", head_z, attention.W_O) + attention.b_O
    neurons = torch.relu(residual_mid @ block.mlp.W_in + block.mlp.b_in)
    residual_post = residual_mid + neurons @ block.mlp.W_out + block.mlp.b_out
    return residual_post @ model.unembed.W_U + model.unembed.b_U, neurons


def build_model(model_config: dict[str, Any]) -> ModularAdditionTransformer:
    """A freshly initialised model for ``model_config`` (fields of :class:`~utils.transformer.TransformerConfig`)."""
    config = TransformerConfig.from_dict(dict(model_config, device="cpu"))
    model = ModularAdditionTransformer(config)
    # Biases stay at zero, as in the original grokking set-up: every computation is in the weights.
    for name, parameter in model.named_parameters():
        if name.split(".")[-1].startswith("b_"):
            parameter.requires_grad_(False)
    return model
