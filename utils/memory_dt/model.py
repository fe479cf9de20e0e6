"""The Chapter 2 architecture: a decision transformer built on the course's transformer.

A trajectory of ``T <= 9`` timesteps becomes ``3T - 1`` tokens ``R1 s1 a1 R2 s2 a2 ... RT sT``
(no final action: predicting it is the job). Token ``3t`` is return-to-go ``t``, ``3t + 1``
state ``t`` and ``3t + 2`` action ``t`` (``t`` from 0). Each token's residual stream starts as

    content embedding  (``hook_embed``):    R: ``return_embedding(R)`` (linear from a scalar),
                                            s: ``state_embedding(s)`` (bias-free, 980 -> d_model),
                                            a: ``action_embedding[a]``;
  + timestep embedding (``hook_pos_embed``): ``timestep_embedding[step since reset]``,

and then runs through the standard blocks (:mod:`utils.transformer`) with causal attention, ``ln_final``
and the unembedding, whose ``W_U`` (d_model x 7) is the *action predictor*. The predicted action
for step ``t`` is read at state token ``t``: :meth:`DecisionTransformer.forward` returns those
logits, shape ``(batch, T, 7)``.

:class:`DecisionTransformer` *is* a :class:`utils.transformer.HookedTransformer` (a subclass
whose ``embed`` and ``pos_embed`` tables are replaced by the four embeddings above), so ``run_with_cache``,
``run_with_hooks``, ``cache["pattern", 0]``, ``cache.decompose_resid()``, ``model.W_Q``,
``model.OV`` and the rest work with TransformerLens's usual names. ``model.W_E`` and
``model.W_pos`` do not exist; use ``W_state``, ``W_action``, ``W_return`` and ``W_timestep``.

Training uses LayerNorm (``normalization_type="LN"``). For analysis, :func:`fold_layer_norm`
returns an equivalent copy with the LayerNorm scales and biases folded into the following weights
(``normalization_type="LNPre"``), writing weights centred, value biases folded into ``b_O``, and
(optionally) ``W_U`` centred, exactly as TransformerLens's ``from_pretrained`` processes weights.
"""

from __future__ import annotations

from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor, nn
from utils.memory_dt.env import N_ACTIONS, N_FEATURES
from utils.transformer import HookedTransformer, TransformerConfig

DEFAULT_MODEL_CONFIG: dict[str, Any] = {
    "n_layers": 3,
    "d_model": 256,
    "n_heads": 8,
    "d_head": 32,
    "d_mlp": 256,
    "act_fn": "relu",
    "normalization_type": "LN",
    "context_timesteps": 9,  # 26 tokens: R1 s1 a1 ... R9 s9
    "max_timestep": 50,  # timesteps 0..49 (MiniGrid truncates at 50 steps)
    "n_features": N_FEATURES,
    "n_actions": N_ACTIONS,
    "seed": 1,
}
_OWN_KEYS = ("context_timesteps", "max_timestep", "n_features", "n_actions")


def n_tokens(timesteps: int) -> int:
    """Tokens in a trajectory of ``timesteps`` steps: ``R s a`` each, minus the last action."""
    return 3 * timesteps - 1


class DecisionTransformer(HookedTransformer):
    """Return-conditioned policy: reads ``R s a`` tokens, predicts each step's action at its ``s``."""

    def __init__(self, cfg: TransformerConfig, model_config: dict[str, Any]) -> None:
        super().__init__(cfg)
        self.model_config = dict(model_config)
        self.context_timesteps = int(model_config["context_timesteps"])
        self.max_timestep = int(model_config["max_timestep"])
        self.n_features = int(model_config["n_features"])
        # The token and absolute-position tables of a language model have no meaning here.
        del self.embed
        del self.pos_embed
        d_model = cfg.d_model
        self.state_embedding = nn.Linear(self.n_features, d_model, bias=False)
        self.action_embedding = nn.Embedding(cfg.d_vocab_out, d_model)
        self.return_embedding = nn.Linear(1, d_model)
        self.timestep_embedding = nn.Embedding(self.max_timestep, d_model)
        std = cfg.initializer_range
        nn.init.normal_(self.state_embedding.weight, std=std)
        nn.init.normal_(self.action_embedding.weight, std=std)
        nn.init.normal_(self.return_embedding.weight, std=std)
        nn.init.zeros_(self.return_embedding.bias)
        nn.init.normal_(self.timestep_embedding.weight, std=std)
        self.setup()  # register the hook points again now that modules changed

    # The embeddings that write to the residual stream, and their d_model axis (for fold_layer_norm).
    writing_weights = (
        ("state_embedding.weight", 0),  # stored (d_model, feature)
        ("return_embedding.weight", 0),  # stored (d_model, 1)
        ("return_embedding.bias", -1),
        ("action_embedding.weight", -1),
        ("timestep_embedding.weight", -1),
    )

    def with_config(self, **changes: Any) -> "DecisionTransformer":
        """A freshly built decision transformer whose config differs by ``changes``."""
        return build_model(dict(self.model_config, **changes))

    # Weight views named like TransformerLens's W_E / W_pos.
    @property
    def W_state(self) -> Float[Tensor, "feature d_model"]:
        """Row ``i``: what one-hot state feature ``i`` (see ``env.FEATURE_NAMES``) adds to a state token."""
        return self.state_embedding.weight.T

    @property
    def W_action(self) -> Float[Tensor, "action d_model"]:
        """Row ``a``: the content embedding of an action token for action ``a``."""
        return self.action_embedding.weight

    @property
    def W_return(self) -> Float[Tensor, "d_model"]:
        """A return-to-go token's content embedding is ``R * W_return + b_return``."""
        return self.return_embedding.weight[:, 0]

    @property
    def b_return(self) -> Float[Tensor, "d_model"]:
        return self.return_embedding.bias

    @property
    def W_timestep(self) -> Float[Tensor, "timestep d_model"]:
        """Row ``t``: added to all three tokens of step ``t`` (steps counted since reset)."""
        return self.timestep_embedding.weight

    def _check_inputs(
        self, states: Tensor, actions: Tensor, returns_to_go: Tensor, timesteps: Tensor
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        for name, value in (("states", states), ("actions", actions),
                            ("returns_to_go", returns_to_go), ("timesteps", timesteps)):
            if not isinstance(value, Tensor):
                raise ValueError(f"{name} must be a torch.Tensor, got {type(value).__name__}") from None
        if states.ndim != 3 or states.shape[-1] != self.n_features:
            raise ValueError(
                f"states must have shape (batch, timestep, {self.n_features}) (one-hot views from "
                f"env.encode_observation), got {tuple(states.shape)}"
            ) from None
        batch, steps = states.shape[:2]
        if not 1 <= steps <= self.context_timesteps:
            raise ValueError(
                f"The model reads 1 to {self.context_timesteps} timesteps, got {steps}; keep only "
                f"the last {self.context_timesteps}"
            ) from None
        if returns_to_go.ndim == 3 and returns_to_go.shape[-1] == 1:
            returns_to_go = returns_to_go[..., 0]
        if tuple(returns_to_go.shape) != (batch, steps):
            raise ValueError(
                f"returns_to_go must have shape (batch, timestep) = {(batch, steps)}, got "
                f"{tuple(returns_to_go.shape)}"
            ) from None
        if tuple(timesteps.shape) != (batch, steps):
            raise ValueError(
                f"timesteps must have shape (batch, timestep) = {(batch, steps)}, got {tuple(timesteps.shape)}"
            ) from None
        if tuple(actions.shape) not in ((batch, steps - 1), (batch, steps)):
            raise ValueError(
                f"actions must have shape (batch, timestep - 1) = {(batch, steps - 1)} (the actions "
                f"between the states), got {tuple(actions.shape)}"
            ) from None
        if self.training:  # the value checks below wait for the GPU; training data is valid
            return states, actions[:, : steps - 1], returns_to_go, timesteps
        if timesteps.numel() and (int(timesteps.min()) < 0 or int(timesteps.max()) >= self.max_timestep):
            raise ValueError(
                f"timesteps must lie in 0..{self.max_timestep - 1}, got {int(timesteps.min())}.."
                f"{int(timesteps.max())}"
            ) from None
        if actions.numel() and (int(actions.min()) < 0 or int(actions.max()) >= self.cfg.d_vocab_out):
            raise ValueError(
                f"actions must lie in 0..{self.cfg.d_vocab_out - 1}, got {int(actions.min())}.."
                f"{int(actions.max())}"
            ) from None
        return states, actions[:, : steps - 1], returns_to_go, timesteps

    def embed_trajectory(
        self,
        states: Float[Tensor, "batch timestep feature"],
        actions: Int[Tensor, "batch timestep_minus_1"],
        returns_to_go: Float[Tensor, "batch timestep"],
        timesteps: Int[Tensor, "batch timestep"],
    ) -> Float[Tensor, "batch pos d_model"]:
        """The residual stream before block 0: ``hook_embed`` (content) + ``hook_pos_embed`` (timestep).

        ``actions`` may also have one entry per state; the last one is then ignored.
        """
        states, actions, returns_to_go, timesteps = self._check_inputs(
            states, actions, returns_to_go, timesteps
        )
        device = self.state_embedding.weight.device
        returns = self.return_embedding(returns_to_go.to(device=device, dtype=torch.float32)[..., None])
        state_tokens = self.state_embedding(states.to(device=device, dtype=torch.float32))
        action_tokens = self.action_embedding(actions.to(device))
        # Pad the (absent) action of the last step, interleave R s a, then drop that pad.
        action_tokens = torch.cat([action_tokens, torch.zeros_like(state_tokens[:, :1])], dim=1)
        content = torch.stack([returns, state_tokens, action_tokens], dim=2).flatten(1, 2)[:, :-1]
        step_embedding = self.timestep_embedding(timesteps.to(device))
        position = step_embedding.repeat_interleave(3, dim=1)[:, :-1]
        return self.hook_embed(content) + self.hook_pos_embed(position)

    def forward(  # type: ignore[override]
        self,
        states: Float[Tensor, "batch timestep feature"],
        actions: Int[Tensor, "batch timestep_minus_1"],
        returns_to_go: Float[Tensor, "batch timestep"],
        timesteps: Int[Tensor, "batch timestep"],
    ) -> Float[Tensor, "batch timestep action"]:
        """Action logits for every step, each read at that step's state token.

        ``states``: one-hot views (``env.encode_observation``); ``actions``: the actions taken
        between them; ``returns_to_go``: the return still wanted at each step; ``timesteps``:
        steps since reset. Logits at step ``t`` depend only on steps ``<= t`` (causal attention).
        """
        residual = self.embed_trajectory(states, actions, returns_to_go, timesteps)
        logits = super().forward(residual, start_at_layer=0, return_type="logits")
        return logits[:, 1::3]


def build_model(model_config: dict[str, Any]) -> DecisionTransformer:
    """A freshly initialised decision transformer for ``model_config`` (see ``DEFAULT_MODEL_CONFIG``).

    Keys other than ``context_timesteps``, ``max_timestep``, ``n_features`` and ``n_actions`` are
    :class:`~utils.transformer.TransformerConfig` fields.
    """
    missing = [key for key in _OWN_KEYS if key not in model_config]
    if missing:
        raise KeyError(f"model config lacks {missing}")
    transformer_config = {key: value for key, value in model_config.items() if key not in _OWN_KEYS}
    n_actions = int(model_config["n_actions"])
    config = TransformerConfig.from_dict(dict(
        transformer_config,
        n_ctx=n_tokens(int(model_config["context_timesteps"])),
        d_vocab=n_actions,
        d_vocab_out=n_actions,
        positional_embedding_type="standard",
        default_prepend_bos=False,
        device="cpu",
    ))
    return DecisionTransformer(config, model_config)


def fold_layer_norm(
    model: DecisionTransformer, center_writing_weights: bool = True, center_unembed: bool = True,
    fold_value_biases: bool = True,
) -> DecisionTransformer:
    """An equivalent copy of ``model`` with LayerNorm folded in, ready for weight-based analysis.

    Each LayerNorm's scale ``w`` and bias ``b`` move into the weights that read its output
    (``ln1`` into W_Q/W_K/W_V, ``ln2`` into W_in, ``ln_final`` into the action predictor W_U),
    and those reading weights are centred over ``d_model`` (their input has zero mean), leaving
    ``normalization_type="LNPre"``: centre and divide by the norm only. Then, optionally:

    - ``center_writing_weights``: every weight that writes to the residual stream (the four
      embeddings, W_O, b_O, W_out, b_out) loses its mean over ``d_model``, which the next
      LayerNorm would remove anyway;
    - ``fold_value_biases``: ``b_V`` moves into ``b_O`` (attention weights sum to one);
    - ``center_unembed``: ``W_U``/``b_U`` lose their mean over the 7 actions (logits shift by
      a constant per token; probabilities and the chosen action are unchanged).

    These are the steps of TransformerLens's ``process_weights_``, which cannot be used here: it
    expects ``embed.W_E``/``pos_embed.W_pos``, and TL 3.9's ``ProcessWeights.fold_layer_norm``
    scales the wrong axis of ``W_in`` when ``d_mlp == d_model`` (as here, 256 and 256).
    The folding is :meth:`utils.transformer.HookedTransformer.fold_layer_norm`.
    """
    if not isinstance(model, DecisionTransformer):
        raise ValueError(f"fold_layer_norm takes a DecisionTransformer, got {type(model).__name__}")
    return model.fold_layer_norm(center_writing_weights, center_unembed, fold_value_biases)
