"""The course's own small transformer: every model of the course is built from this file.

Read it top to bottom: a config, the five pieces of a transformer (embeddings, LayerNorm,
attention, MLP, unembedding), a block that wires them into the residual stream, and
:class:`HookedTransformer`, the model. It is a small copy of TransformerLens's
``HookedTransformer`` (which TransformerLens 4 removed) with the same parameter names, hook names
and arithmetic, built on the two pieces every TransformerLens major keeps: ``HookPoint`` (an
identity module that hooks can read and edit) and ``HookedRootModule`` (``run_with_hooks``,
``run_with_cache``, ``hooks()``). So the course runs on TransformerLens 3.9 and 4.x, and the
shipped checkpoints load unchanged.

The residual stream of an input with ``pos`` positions, and the hook points on it (layer ``L``):

==================================  ===============================  ==============================
hook point                          shape                            what it holds
==================================  ===============================  ==============================
``hook_embed``                      ``[batch, pos, d_model]``        token embedding ``W_E[token]``
``hook_pos_embed``                  ``[batch, pos, d_model]``        positional embedding ``W_pos``
``blocks.L.hook_resid_pre``         ``[batch, pos, d_model]``        residual stream into block L
``blocks.L.ln1.hook_scale``         ``[batch, pos, 1]``              LayerNorm's divisor (LN models)
``blocks.L.ln1.hook_normalized``    ``[batch, pos, d_model]``        centred, divided by the scale
``blocks.L.attn.hook_q/k/v``        ``[batch, pos, head, d_head]``   queries, keys, values
``blocks.L.attn.hook_attn_scores``  ``[batch, head, query, key]``    ``q.k / sqrt(d_head)`` before
                                                                     softmax; masked keys ``-inf``
``blocks.L.attn.hook_pattern``      ``[batch, head, query, key]``    softmax of the scores
``blocks.L.attn.hook_z``            ``[batch, pos, head, d_head]``   pattern-weighted values
``blocks.L.attn.hook_result``       ``[batch, pos, head, d_model]``  ``z @ W_O`` per head (only with
                                                                     ``set_use_attn_result(True)``)
``blocks.L.hook_attn_out``          ``[batch, pos, d_model]``        sum of heads ``+ b_O``
``blocks.L.hook_resid_mid``         ``[batch, pos, d_model]``        ``resid_pre + attn_out``
``blocks.L.ln2.hook_scale/...``     as ``ln1``                       LayerNorm before the MLP
``blocks.L.mlp.hook_pre``           ``[batch, pos, d_mlp]``          ``x @ W_in + b_in``
``blocks.L.mlp.hook_post``          ``[batch, pos, d_mlp]``          neuron activations
``blocks.L.hook_mlp_out``           ``[batch, pos, d_model]``        ``post @ W_out + b_out``
``blocks.L.hook_resid_post``        ``[batch, pos, d_model]``        ``resid_mid + mlp_out``
``ln_final.hook_scale/normalized``  as ``ln1``                       final LayerNorm (LN models)
``unembed.hook_in`` / ``hook_out``  ``[batch, pos, d_model/vocab]``  into and out of ``W_U``
==================================  ===============================  ==============================

An edit to any of them reaches everything computed after it (an edit to ``hook_resid_mid``
reaches the MLP *and* the residual stream after the block), as in TransformerLens 3.

The matrix products use ``F.linear`` and ``torch.addmm`` in the same order as TransformerLens
3.9, not ``einsum``: float32 sums in another order differ in the last bits (about 3e-5 on these
models' logits), and ``tests/test_reference_outputs.py`` holds the shipped models to 1e-5 of their
TransformerLens 3.9 outputs.
"""

from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Callable, Optional, Union

import numpy as np
import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor, nn
from transformer_lens import ActivationCache, FactoredMatrix, HookedRootModule
from transformer_lens.hook_points import HookPoint

ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {"relu": F.relu, "gelu": F.gelu}
NORMALIZATIONS = (None, "LN", "LNPre")  # none, LayerNorm, LayerNorm folded into the next weights


@dataclass
class TransformerConfig:
    """The architecture: the fields of TransformerLens's ``HookedTransformerConfig`` the course uses.

    ``d_vocab_out=-1`` means ``d_vocab``; ``initializer_range=-1`` means ``0.8 / sqrt(d_model)``;
    ``attn_scale=-1`` means ``sqrt(d_head)``. Creating a config with a ``seed`` seeds torch, numpy
    and ``random`` (as TransformerLens does), and the weights are drawn from that seed.
    """

    n_layers: int
    d_model: int
    n_heads: int
    d_head: int
    d_mlp: int
    d_vocab: int
    n_ctx: int
    d_vocab_out: int = -1
    act_fn: str = "relu"
    normalization_type: Optional[str] = "LN"
    attention_dir: str = "causal"  # "causal": position i reads positions <= i; or "bidirectional"
    eps: float = 1e-5  # LayerNorm's epsilon
    init_mode: str = "gpt2"  # weight matrices ~ N(0, initializer_range^2), biases 0
    initializer_range: float = -1.0
    seed: Optional[int] = None
    attn_scale: float = -1.0
    use_attn_result: bool = False  # compute blocks.L.attn.hook_result (per-head outputs)
    device: Union[str, torch.device] = "cpu"
    dtype: torch.dtype = torch.float32
    positional_embedding_type: str = "standard"  # learned absolute positions (the only kind here)
    default_prepend_bos: bool = False  # accepted for compatibility; there is no tokenizer
    attn_only: bool = False  # read by ActivationCache; every block here has an MLP
    final_rms: bool = False  # read by ActivationCache; the final norm is a LayerNorm

    def __post_init__(self) -> None:
        if self.act_fn not in ACTIVATIONS:
            raise ValueError(f"act_fn must be one of {sorted(ACTIVATIONS)}, got {self.act_fn!r}")
        if self.normalization_type not in NORMALIZATIONS:
            raise ValueError(f"normalization_type must be one of {NORMALIZATIONS}, got {self.normalization_type!r}")
        if self.attention_dir not in ("causal", "bidirectional"):
            raise ValueError(f"attention_dir must be 'causal' or 'bidirectional', got {self.attention_dir!r}")
        if self.init_mode != "gpt2":
            raise ValueError(f"init_mode must be 'gpt2' (the only initialisation the course uses), got {self.init_mode!r}")
        if self.positional_embedding_type != "standard" or self.attn_only or self.final_rms:
            raise ValueError("this transformer has learned absolute positions, an MLP in every block and a "
                             "LayerNorm (not RMSNorm) at the end; leave positional_embedding_type, attn_only "
                             "and final_rms at their defaults")
        if self.d_vocab_out == -1:
            self.d_vocab_out = self.d_vocab
        if self.initializer_range < 0:
            self.initializer_range = 0.8 / np.sqrt(self.d_model)
        if self.attn_scale == -1.0:
            self.attn_scale = np.sqrt(self.d_head)
        if self.seed is not None:
            torch.manual_seed(self.seed)
            random.seed(self.seed)
            np.random.seed(self.seed)

    @classmethod
    def from_dict(cls, config: dict[str, Any]) -> "TransformerConfig":
        """A config from keyword arguments, with a one-line error for a key that is not a field."""
        names = {field.name for field in fields(cls)}
        unknown = sorted(set(config) - names)
        if unknown:
            raise ValueError(f"unknown transformer config keys {unknown}; the fields are {sorted(names)}")
        return cls(**config)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Embed(nn.Module):
    """Token embedding: row ``t`` of ``W_E [d_vocab, d_model]`` is token ``t``'s vector."""

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.W_E = nn.Parameter(torch.empty(cfg.d_vocab, cfg.d_model, dtype=cfg.dtype))

    def forward(self, tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, "batch pos d_model"]:
        return self.W_E[tokens, :]


class PosEmbed(nn.Module):
    """Learned positional embedding: row ``i`` of ``W_pos [n_ctx, d_model]`` is added at position ``i``."""

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.W_pos = nn.Parameter(torch.empty(cfg.n_ctx, cfg.d_model, dtype=cfg.dtype))

    def forward(self, tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, "batch pos d_model"]:
        batch, pos = tokens.shape
        return self.W_pos[None, :pos, :].expand(batch, -1, -1).clone()


class LayerNorm(nn.Module):
    """Centre each vector, divide it by its root-mean-square (``hook_scale``), then (with
    ``affine=True``) multiply by ``w`` and add ``b``. ``affine=False`` is TransformerLens's
    ``LayerNormPre``: what is left after ``w`` and ``b`` are folded into the next weights."""

    def __init__(self, cfg: TransformerConfig, affine: bool = True) -> None:
        super().__init__()
        self.cfg = cfg
        self.affine = affine
        if affine:
            self.w = nn.Parameter(torch.ones(cfg.d_model, dtype=cfg.dtype))
            self.b = nn.Parameter(torch.zeros(cfg.d_model, dtype=cfg.dtype))
        self.hook_scale = HookPoint()  # [batch, pos, 1]
        self.hook_normalized = HookPoint()  # [batch, pos, d_model]

    def forward(self, x: Float[Tensor, "batch pos d_model"]) -> Float[Tensor, "batch pos d_model"]:
        x = x - x.mean(-1, keepdim=True)
        scale = self.hook_scale((x.pow(2).mean(-1, keepdim=True) + self.cfg.eps).sqrt())
        x = self.hook_normalized(x / scale)
        return x * self.w + self.b if self.affine else x


def _norm(cfg: TransformerConfig) -> nn.Module:
    """The LayerNorm a model of this config uses (``nn.Identity`` when it has none)."""
    if cfg.normalization_type is None:
        return nn.Identity()
    return LayerNorm(cfg, affine=cfg.normalization_type == "LN")


class Attention(nn.Module):
    """Multi-head attention. Weights are per head and multiply on the right: ``W_Q, W_K, W_V``
    are ``[head, d_model, d_head]``, ``W_O`` is ``[head, d_head, d_model]``.

    The buffers ``mask`` (empty) and ``IGNORE`` (``-inf``, the score of a masked key) are kept
    because TransformerLens's attention has them, so they are in the shipped state dicts.
    """

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        n, d, h = cfg.n_heads, cfg.d_model, cfg.d_head
        # Registration order = TransformerLens's, so a seeded initialisation draws the same weights.
        self.W_Q = nn.Parameter(torch.empty(n, d, h, dtype=cfg.dtype))
        self.W_O = nn.Parameter(torch.empty(n, h, d, dtype=cfg.dtype))
        self.b_Q = nn.Parameter(torch.zeros(n, h, dtype=cfg.dtype))
        self.b_O = nn.Parameter(torch.zeros(d, dtype=cfg.dtype))
        self.W_K = nn.Parameter(torch.empty(n, d, h, dtype=cfg.dtype))
        self.W_V = nn.Parameter(torch.empty(n, d, h, dtype=cfg.dtype))
        self.b_K = nn.Parameter(torch.zeros(n, h, dtype=cfg.dtype))
        self.b_V = nn.Parameter(torch.zeros(n, h, dtype=cfg.dtype))
        self.register_buffer("mask", torch.empty((0, 0), dtype=torch.bool))
        self.register_buffer("IGNORE", torch.tensor(-torch.inf))
        self.attn_scale = cfg.attn_scale
        self.hook_q = HookPoint()  # [batch, pos, head, d_head]
        self.hook_k = HookPoint()
        self.hook_v = HookPoint()
        self.hook_attn_scores = HookPoint()  # [batch, head, query_pos, key_pos], before softmax
        self.hook_pattern = HookPoint()  # [batch, head, query_pos, key_pos], after softmax
        self.hook_z = HookPoint()  # [batch, pos, head, d_head]
        self.hook_result = HookPoint()  # [batch, pos, head, d_model], with cfg.use_attn_result

    @property
    def OV(self) -> FactoredMatrix:
        """Each head's OV circuit ``W_V @ W_O`` ``[head, d_model, d_model]``, kept factored."""
        return FactoredMatrix(self.W_V, self.W_O)

    @property
    def QK(self) -> FactoredMatrix:
        """Each head's QK circuit ``W_Q @ W_K^T`` ``[head, d_model, d_model]`` (query side on the left)."""
        return FactoredMatrix(self.W_Q, self.W_K.transpose(-2, -1))

    @staticmethod
    def _project(
        x: Float[Tensor, "batch pos d_model"], weight: Float[Tensor, "head d_model d_head"], bias: Float[Tensor, "head d_head"]
    ) -> Float[Tensor, "batch pos head d_head"]:
        """``x @ W[h] + b[h]`` for every head ``h``, as one ``F.linear``."""
        n_heads, d_model, d_head = weight.shape
        stacked = weight.permute(0, 2, 1).reshape(n_heads * d_head, d_model)  # [(head d_head), d_model]
        return F.linear(x, stacked, bias.reshape(-1)).reshape(x.shape[0], x.shape[1], n_heads, d_head)

    def forward(self, x: Float[Tensor, "batch pos d_model"]) -> Float[Tensor, "batch pos d_model"]:
        q = self.hook_q(self._project(x, self.W_Q, self.b_Q))
        k = self.hook_k(self._project(x, self.W_K, self.b_K))
        v = self.hook_v(self._project(x, self.W_V, self.b_V))
        # [batch, head, query, d_head] @ [batch, head, d_head, key] -> [batch, head, query, key]
        scores = q.permute(0, 2, 1, 3) @ k.permute(0, 2, 3, 1) / self.attn_scale
        if self.cfg.attention_dir == "causal":
            positions = torch.arange(scores.shape[-1], device=scores.device)
            visible = positions[None, :] <= positions[:, None]  # [query, key]: key at or before query
            scores = torch.where(visible, scores, self.IGNORE.to(scores.device))
        scores = self.hook_attn_scores(scores)
        pattern = F.softmax(scores, dim=-1)
        pattern = self.hook_pattern(torch.where(torch.isnan(pattern), torch.zeros_like(pattern), pattern))
        z = self.hook_z((pattern @ v.permute(0, 2, 1, 3)).permute(0, 2, 1, 3))  # [batch, pos, head, d_head]
        if not self.cfg.use_attn_result:
            n_heads, d_head, d_model = self.W_O.shape
            w_o = self.W_O.permute(2, 0, 1).reshape(d_model, n_heads * d_head)  # [d_model, (head d_head)]
            return F.linear(z.reshape(z.shape[0], z.shape[1], n_heads * d_head), w_o, self.b_O)
        result = self.hook_result((z[..., None] * self.W_O[None, None]).sum(-2))  # [batch, pos, head, d_model]
        return result.sum(-2) + self.b_O


class MLP(nn.Module):
    """``act(x @ W_in + b_in) @ W_out + b_out`` at each position; ``hook_post`` holds the neurons."""

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.act_fn = ACTIVATIONS[cfg.act_fn]
        self.W_in = nn.Parameter(torch.empty(cfg.d_model, cfg.d_mlp, dtype=cfg.dtype))
        self.b_in = nn.Parameter(torch.zeros(cfg.d_mlp, dtype=cfg.dtype))
        self.W_out = nn.Parameter(torch.empty(cfg.d_mlp, cfg.d_model, dtype=cfg.dtype))
        self.b_out = nn.Parameter(torch.zeros(cfg.d_model, dtype=cfg.dtype))
        self.hook_pre = HookPoint()  # [batch, pos, d_mlp]
        self.hook_post = HookPoint()  # [batch, pos, d_mlp]

    def forward(self, x: Float[Tensor, "batch pos d_model"]) -> Float[Tensor, "batch pos d_model"]:
        batch, pos, d_model = x.shape
        pre = self.hook_pre(torch.addmm(self.b_in, x.reshape(-1, d_model), self.W_in).view(batch, pos, -1))
        post = self.hook_post(self.act_fn(pre))
        return torch.addmm(self.b_out, post.reshape(batch * pos, -1), self.W_out).view(batch, pos, d_model)


class TransformerBlock(nn.Module):
    """One layer: ``resid_mid = resid_pre + attn(ln1(resid_pre))``, ``resid_post = resid_mid + mlp(ln2(resid_mid))``."""

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.ln1 = _norm(cfg)
        self.ln2 = _norm(cfg)
        self.attn = Attention(cfg)
        self.mlp = MLP(cfg)
        self.hook_resid_pre = HookPoint()  # [batch, pos, d_model]
        self.hook_attn_out = HookPoint()
        self.hook_resid_mid = HookPoint()
        self.hook_mlp_out = HookPoint()
        self.hook_resid_post = HookPoint()

    def forward(self, resid_pre: Float[Tensor, "batch pos d_model"]) -> Float[Tensor, "batch pos d_model"]:
        resid_pre = self.hook_resid_pre(resid_pre)
        attn_out = self.hook_attn_out(self.attn(self.ln1(resid_pre)))
        resid_mid = self.hook_resid_mid(resid_pre + attn_out)
        mlp_out = self.hook_mlp_out(self.mlp(self.ln2(resid_mid)))
        return self.hook_resid_post(resid_mid + mlp_out)


class Unembed(nn.Module):
    """Logits ``x @ W_U + b_U`` with ``W_U [d_model, d_vocab_out]``."""

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.W_U = nn.Parameter(torch.empty(cfg.d_model, cfg.d_vocab_out, dtype=cfg.dtype))
        self.b_U = nn.Parameter(torch.zeros(cfg.d_vocab_out, dtype=cfg.dtype))
        self.hook_in = HookPoint()  # [batch, pos, d_model]
        self.hook_out = HookPoint()  # [batch, pos, d_vocab_out]

    def forward(self, residual: Float[Tensor, "batch pos d_model"]) -> Float[Tensor, "batch pos d_vocab_out"]:
        residual = self.hook_in(residual)
        return self.hook_out(F.linear(residual, self.W_U.T.contiguous(), self.b_U))


class HookedTransformer(HookedRootModule):
    """A transformer whose every intermediate activation is a hook point (see the module docstring).

    ``model(tokens)`` returns logits ``[batch, pos, d_vocab_out]``; ``run_with_cache``,
    ``run_with_hooks`` and ``hooks()`` work as in TransformerLens. The course's three models are
    subclasses that change how the input is embedded and read out.
    """

    def __init__(self, cfg: Union[TransformerConfig, dict[str, Any]]) -> None:
        super().__init__()
        self.cfg = cfg if isinstance(cfg, TransformerConfig) else TransformerConfig.from_dict(cfg)
        self.embed = Embed(self.cfg)
        self.hook_embed = HookPoint()  # [batch, pos, d_model]
        self.pos_embed = PosEmbed(self.cfg)
        self.hook_pos_embed = HookPoint()  # [batch, pos, d_model]
        self.blocks = nn.ModuleList([TransformerBlock(self.cfg) for _ in range(self.cfg.n_layers)])
        if self.cfg.normalization_type is not None:
            self.ln_final = _norm(self.cfg)
        self.unembed = Unembed(self.cfg)
        self.init_weights()
        self.setup()  # find the hook points and name them (HookedRootModule)

    def init_weights(self) -> None:
        """Every weight matrix ``W_*`` ~ N(0, initializer_range^2), in registration order, from ``cfg.seed``."""
        if self.cfg.seed is not None:
            torch.manual_seed(self.cfg.seed)
        for name, parameter in self.named_parameters():
            if "W_" in name:
                nn.init.normal_(parameter, std=self.cfg.initializer_range)

    def embed_tokens(self, tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, "batch pos d_model"]:
        """The residual stream before block 0: ``hook_embed + hook_pos_embed``."""
        if tokens.ndim == 1:
            tokens = tokens[None]
        tokens = tokens.to(self.embed.W_E.device)
        return self.hook_embed(self.embed(tokens)) + self.hook_pos_embed(self.pos_embed(tokens))

    def forward(
        self,
        input: Union[Int[Tensor, "batch pos"], Float[Tensor, "batch pos d_model"]],
        return_type: Optional[str] = "logits",
        start_at_layer: Optional[int] = None,
        stop_at_layer: Optional[int] = None,
    ) -> Union[None, Float[Tensor, "batch pos d_vocab_out"], Float[Tensor, "batch pos d_model"]]:
        """Logits for ``input`` tokens.

        Args:
            input: token ids ``[batch, pos]``; with ``start_at_layer`` set, the residual stream
                ``[batch, pos, d_model]`` into that block instead.
            return_type: ``"logits"``, or ``None`` to run the blocks (for hooks) and return nothing.
            start_at_layer: skip the embeddings and the blocks before this one.
            stop_at_layer: stop before this block and return the residual stream (0: the embeddings).
        """
        if start_at_layer is None:
            residual = self.embed_tokens(input)
        else:
            residual = input
        for block in self.blocks[start_at_layer:stop_at_layer]:
            residual = block(residual)
        if stop_at_layer is not None:
            return residual
        return self.unembed_residual(residual, return_type)

    def unembed_residual(
        self, residual: Float[Tensor, "batch pos d_model"], return_type: Optional[str] = "logits"
    ) -> Optional[Float[Tensor, "batch pos d_vocab_out"]]:
        """The final LayerNorm (if any) and the unembedding."""
        if self.cfg.normalization_type is not None:
            residual = self.ln_final(residual)
        if return_type is None:
            return None
        if return_type != "logits":
            raise ValueError(f"return_type must be 'logits' or None, got {return_type!r}; compute a loss from the logits")
        return self.unembed(residual)

    def run_with_cache(  # type: ignore[override]
        self, *model_args: Any, return_cache_object: bool = True, remove_batch_dim: bool = False, **kwargs: Any
    ) -> tuple[Any, Union[ActivationCache, dict[str, Tensor]]]:
        """Run the model and return ``(output, cache)``: an ``ActivationCache`` of every hook point
        (``cache["pattern", 0]``, ``cache.decompose_resid()``, ...), or the plain dict with
        ``return_cache_object=False``. Other keywords (``names_filter``, ...) as in TransformerLens."""
        out, cache = super().run_with_cache(*model_args, remove_batch_dim=remove_batch_dim, **kwargs)
        cache_dict = cache.cache_dict if isinstance(cache, ActivationCache) else cache
        if not return_cache_object:
            return out, cache_dict
        return out, ActivationCache(cache_dict, self, has_batch_dim=not remove_batch_dim)

    def set_use_attn_result(self, use_attn_result: bool) -> None:
        """Compute each head's output separately, in ``blocks.L.attn.hook_result`` (slower)."""
        self.cfg.use_attn_result = use_attn_result

    def to(self, *args: Any, **kwargs: Any) -> "HookedTransformer":  # type: ignore[override]
        """``nn.Module.to`` that keeps ``cfg.device`` in step with the weights."""
        moved = super().to(*args, **kwargs)
        self.cfg.device = self.unembed.W_U.device
        return moved

    def accumulated_bias(
        self, layer: int, mlp_input: bool = False, include_mlp_biases: bool = True
    ) -> Float[Tensor, "d_model"]:
        """Sum of the output biases (``b_O``, and ``b_out`` unless ``include_mlp_biases=False``) of
        the blocks before ``layer``, plus ``layer``'s ``b_O`` if ``mlp_input`` (ActivationCache uses it)."""
        bias = torch.zeros(self.cfg.d_model, device=self.unembed.W_U.device, dtype=self.cfg.dtype)
        for block in self.blocks[:layer]:
            bias = bias + block.attn.b_O
            if include_mlp_biases:
                bias = bias + block.mlp.b_out
        if mlp_input:
            if layer >= self.cfg.n_layers:
                raise ValueError(f"mlp_input needs a layer below n_layers={self.cfg.n_layers}, got {layer}")
            bias = bias + self.blocks[layer].attn.b_O
        return bias

    # Weights stacked over layers, named as in TransformerLens: W_Q is [layer, head, d_model, d_head].
    @property
    def W_E(self) -> Float[Tensor, "d_vocab d_model"]:
        return self.embed.W_E

    @property
    def W_pos(self) -> Float[Tensor, "n_ctx d_model"]:
        return self.pos_embed.W_pos

    @property
    def W_U(self) -> Float[Tensor, "d_model d_vocab_out"]:
        return self.unembed.W_U

    @property
    def b_U(self) -> Float[Tensor, "d_vocab_out"]:
        return self.unembed.b_U

    def _stack(self, get: Callable[[TransformerBlock], Tensor]) -> Tensor:
        return torch.stack([get(block) for block in self.blocks], dim=0)

    @property
    def W_Q(self) -> Float[Tensor, "layer head d_model d_head"]:
        return self._stack(lambda block: block.attn.W_Q)

    @property
    def W_K(self) -> Float[Tensor, "layer head d_model d_head"]:
        return self._stack(lambda block: block.attn.W_K)

    @property
    def W_V(self) -> Float[Tensor, "layer head d_model d_head"]:
        return self._stack(lambda block: block.attn.W_V)

    @property
    def W_O(self) -> Float[Tensor, "layer head d_head d_model"]:
        return self._stack(lambda block: block.attn.W_O)

    @property
    def b_Q(self) -> Float[Tensor, "layer head d_head"]:
        return self._stack(lambda block: block.attn.b_Q)

    @property
    def b_K(self) -> Float[Tensor, "layer head d_head"]:
        return self._stack(lambda block: block.attn.b_K)

    @property
    def b_V(self) -> Float[Tensor, "layer head d_head"]:
        return self._stack(lambda block: block.attn.b_V)

    @property
    def b_O(self) -> Float[Tensor, "layer d_model"]:
        return self._stack(lambda block: block.attn.b_O)

    @property
    def W_in(self) -> Float[Tensor, "layer d_model d_mlp"]:
        return self._stack(lambda block: block.mlp.W_in)

    @property
    def W_out(self) -> Float[Tensor, "layer d_mlp d_model"]:
        return self._stack(lambda block: block.mlp.W_out)

    @property
    def b_in(self) -> Float[Tensor, "layer d_mlp"]:
        return self._stack(lambda block: block.mlp.b_in)

    @property
    def b_out(self) -> Float[Tensor, "layer d_model"]:
        return self._stack(lambda block: block.mlp.b_out)

    @property
    def QK(self) -> FactoredMatrix:
        """Every head's QK circuit, ``[layer, head, d_model, d_model]``, factored."""
        return FactoredMatrix(self.W_Q, self.W_K.transpose(-2, -1))

    @property
    def OV(self) -> FactoredMatrix:
        """Every head's OV circuit, ``[layer, head, d_model, d_model]``, factored."""
        return FactoredMatrix(self.W_V, self.W_O)

    # LayerNorm folding.
    writing_weights: tuple[tuple[str, int], ...] = (("embed.W_E", -1), ("pos_embed.W_pos", -1))
    """State-dict keys of the embeddings (and the axis that is ``d_model``): weights that write to
    the residual stream before block 0, centred by :meth:`fold_layer_norm`."""

    def with_config(self, **changes: Any) -> "HookedTransformer":
        """A new model of the same class with some config fields changed (for :meth:`fold_layer_norm`)."""
        return type(self)(replace(self.cfg, **changes))

    @torch.no_grad()
    def fold_layer_norm(
        self, center_writing_weights: bool = True, center_unembed: bool = True, fold_value_biases: bool = True
    ) -> "HookedTransformer":
        """An equivalent copy with every LayerNorm's ``w`` and ``b`` folded into the weights that read it.

        ``ln1`` goes into ``W_Q, W_K, W_V`` (and their biases), ``ln2`` into ``W_in``, ``ln_final``
        into ``W_U``; those reading weights are then centred over ``d_model`` (their input has zero
        mean), and the copy has ``normalization_type="LNPre"`` (centre and divide only). Then,
        optionally: ``center_writing_weights`` removes the ``d_model`` mean of every weight that
        writes to the residual stream (embeddings, ``W_O``, ``b_O``, ``W_out``, ``b_out``), which
        the next LayerNorm removes anyway; ``fold_value_biases`` moves ``b_V`` into ``b_O``
        (attention weights sum to one); ``center_unembed`` removes ``W_U``'s and ``b_U``'s mean
        over the outputs (logits move by a constant per position; probabilities do not change).

        These are the steps of TransformerLens's ``process_weights_``, written out because TL
        3.9's version scales the wrong axis of ``W_in`` when ``d_mlp == d_model``.
        """
        if self.cfg.normalization_type != "LN":
            raise ValueError(
                f"fold_layer_norm needs a model with normalization_type 'LN', this one has "
                f"{self.cfg.normalization_type!r} (already folded?)"
            )
        state = {key: value.detach().clone() for key, value in self.state_dict().items()}

        def fold(ln: str, weight: str, bias: str, d_model_dim: int) -> None:
            """Fold LayerNorm ``ln`` into the reader ``weight`` (whose ``d_model`` axis is ``d_model_dim``)."""
            scale, shift = state.pop(f"{ln}.w"), state.pop(f"{ln}.b")
            shape = [1] * state[weight].ndim
            shape[d_model_dim] = -1
            state[bias] = state[bias] + (state[weight] * shift.view(shape)).sum(d_model_dim)
            state[weight] = state[weight] * scale.view(shape)
            state[weight] = state[weight] - state[weight].mean(d_model_dim, keepdim=True)

        for layer in range(self.cfg.n_layers):
            block = f"blocks.{layer}"
            scale, shift = state[f"{block}.ln1.w"], state[f"{block}.ln1.b"]
            for name in "QKV":  # W_{Q,K,V}: [head, d_model, d_head]
                state[f"{block}.ln1.w"], state[f"{block}.ln1.b"] = scale, shift
                fold(f"{block}.ln1", f"{block}.attn.W_{name}", f"{block}.attn.b_{name}", 1)
            fold(f"{block}.ln2", f"{block}.mlp.W_in", f"{block}.mlp.b_in", 0)  # W_in: [d_model, d_mlp]
        fold("ln_final", "unembed.W_U", "unembed.b_U", 0)  # W_U: [d_model, d_vocab_out]

        if fold_value_biases:
            for layer in range(self.cfg.n_layers):
                attn = f"blocks.{layer}.attn"
                state[f"{attn}.b_O"] = state[f"{attn}.b_O"] + torch.einsum(
                    "hd,hdm->m", state[f"{attn}.b_V"], state[f"{attn}.W_O"]
                )
                state[f"{attn}.b_V"] = torch.zeros_like(state[f"{attn}.b_V"])
        if center_unembed:
            state["unembed.W_U"] = state["unembed.W_U"] - state["unembed.W_U"].mean(-1, keepdim=True)
            state["unembed.b_U"] = state["unembed.b_U"] - state["unembed.b_U"].mean()
        if center_writing_weights:
            keys = list(self.writing_weights) + [
                (f"blocks.{layer}.{key}", -1)
                for layer in range(self.cfg.n_layers)
                for key in ("attn.W_O", "attn.b_O", "mlp.W_out", "mlp.b_out")
            ]
            for key, dim in keys:
                state[key] = state[key] - state[key].mean(dim, keepdim=True)

        folded = self.with_config(normalization_type="LNPre")
        folded.load_state_dict(state, strict=True)
        device = next(self.parameters()).device
        nn.Module.to(folded, device)
        folded.cfg.device = device
        folded.train(self.training)
        return folded
