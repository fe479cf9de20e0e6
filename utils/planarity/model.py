"""The Chapter 1 architecture: a transformer that reads a graph's adjacency matrix.

Each of the 10 vertices is one position of the residual stream. Vertex ``i`` starts as
``A[i] @ W_E + W_pos[i]``: the sum of the embedding rows of its neighbours (``hook_embed``)
plus its own positional embedding (``hook_pos_embed``). Two layers of bidirectional attention
(8 heads of 32) and GELU MLPs (512 neurons), with no LayerNorm, act on that; the final
residual stream is averaged over the 10 vertices (``hook_pooled``) and unembedded into 2 logits,
index 1 meaning planar.

Everything else is the course's transformer (:mod:`utils.transformer`), with TransformerLens's
names: ``run_with_cache``, ``run_with_hooks``, ``blocks``, ``W_Q``/``W_K``/... and
``cfg.use_attn_result`` (per-head results in ``blocks.L.attn.hook_result``).
Since the pooling is a mean and there is no LayerNorm, a component's direct effect on the
logits is its output averaged over vertices, times ``W_U``.
"""

from __future__ import annotations

import math
from typing import Any, Optional, Union

import networkx as nx
import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens.hook_points import HookPoint

from utils.planarity.data import N_VERTICES, adjacency_from_graph
from utils.transformer import Embed, HookedTransformer, PosEmbed, TransformerConfig

PLANAR = 1  # index of the "planar" logit
NON_PLANAR = 0

DEFAULT_MODEL_CONFIG: dict[str, Any] = {
    "n_layers": 2,
    "d_model": 128,
    "n_heads": 8,
    "d_head": 32,
    "d_mlp": 512,
    "act_fn": "gelu",
    "normalization_type": None,
    "attention_dir": "bidirectional",
    "d_vocab": N_VERTICES,  # rows of W_E: one per possible neighbour
    "n_ctx": N_VERTICES,  # positions: one per vertex
    "d_vocab_out": 2,  # logits: [non-planar, planar]
    "init_mode": "gpt2",  # weight matrices ~ N(0, (0.8 / sqrt(d_model))^2), biases 0
    "seed": 0,
    "pos_init_std": 1.0,  # W_pos ~ N(0, 1): the large positional init trains faster
}

# Keys of a model config that are this module's, not TransformerConfig's.
_OWN_KEYS = {"pos_init_std"}

GraphInput = Union[Tensor, np.ndarray, nx.Graph]


class AdjacencyEmbed(Embed):
    """``A @ W_E``: each vertex's embedding is the sum of ``W_E`` rows of its neighbours."""

    def forward(  # type: ignore[override]
        self, adjacency: Float[Tensor, "batch vertex neighbour"]
    ) -> Float[Tensor, "batch vertex d_model"]:
        return adjacency @ self.W_E


class VertexPosEmbed(PosEmbed):
    """``W_pos[i]`` at vertex ``i``, the same for every graph of the batch."""

    def forward(  # type: ignore[override]
        self, adjacency: Float[Tensor, "batch vertex neighbour"]
    ) -> Float[Tensor, "batch vertex d_model"]:
        return self.W_pos[None, : adjacency.shape[1], :].expand(adjacency.shape[0], -1, -1).clone()


class PlanarityTransformer(HookedTransformer):
    """Classifies graphs on ``cfg.n_ctx`` vertices as planar (logit 1) or not (logit 0).

    ``model(adjacency)`` takes one ``[10, 10]`` adjacency matrix, a batch ``[batch, 10, 10]`` or
    a ``networkx.Graph`` with 10 vertices and returns logits ``[batch, 2]`` (batch 1 for a single
    graph). Adjacency matrices are 0/1 floats, symmetric, with a zero diagonal; anything else
    raises ``ValueError``.
    """

    def __init__(self, cfg: TransformerConfig):
        if cfg.d_vocab != cfg.n_ctx or cfg.d_vocab_out != 2 or cfg.positional_embedding_type != "standard":
            raise ValueError(
                "a planarity model needs d_vocab == n_ctx (the number of vertices), d_vocab_out == 2 "
                f"and standard positional embeddings, got d_vocab={cfg.d_vocab}, n_ctx={cfg.n_ctx}, "
                f"d_vocab_out={cfg.d_vocab_out}, positional_embedding_type={cfg.positional_embedding_type!r}"
            )
        super().__init__(cfg)
        # Same parameter names and shapes as the plain Embed/PosEmbed (embed.W_E,
        # pos_embed.W_pos), so model.W_E, model.W_pos and the state dict look as usual.
        embed, pos_embed = AdjacencyEmbed(self.cfg), VertexPosEmbed(self.cfg)
        embed.W_E.data.copy_(self.embed.W_E.data)
        pos_embed.W_pos.data.copy_(self.pos_embed.W_pos.data)
        self.embed, self.pos_embed = embed, pos_embed
        self.hook_pooled = HookPoint()  # [batch, d_model]: final residual stream, mean over vertices
        self.setup()  # re-register hook points and module names

    @property
    def n_vertices(self) -> int:
        """Number of vertices of the graphs this model reads (10)."""
        return self.cfg.n_ctx

    def to_adjacency(self, graph: GraphInput) -> Float[Tensor, "batch vertex vertex"]:
        """Check an input and return it as a batch of float adjacency matrices on the model's device."""
        return as_adjacency_batch(graph, self.n_vertices, dtype=self.cfg.dtype, device=self.embed.W_E.device)

    def forward(  # type: ignore[override]
        self,
        input: GraphInput,
        return_type: Optional[str] = "logits",
        start_at_layer: Optional[int] = None,
        stop_at_layer: Optional[int] = None,
        check_input: bool = True,
    ) -> Union[None, Float[Tensor, "batch 2"], Float[Tensor, "batch vertex d_model"]]:
        """Logits ``[batch, 2]`` (index 1 = planar) for a graph or a batch of graphs.

        Args:
            input: adjacency matrix ``[10, 10]`` or ``[batch, 10, 10]`` (tensor or numpy array),
                or a ``networkx.Graph`` on 10 vertices. With ``start_at_layer`` set, the residual
                stream ``[batch, 10, d_model]`` before that layer instead.
            return_type: ``"logits"``, or ``None`` to run the blocks (for hooks) and return nothing.
            start_at_layer: skip the embedding and the blocks before this one.
            stop_at_layer: stop before this block and return the residual stream
                ``[batch, 10, d_model]`` (0 returns the embeddings).
            check_input: validate the adjacency matrices (training turns this off for speed).
        """
        if start_at_layer is None:
            adjacency = self.to_adjacency(input) if check_input else input
            embedding = self.hook_embed(self.embed(adjacency))  # [batch, vertex, d_model]
            positional = self.hook_pos_embed(self.pos_embed(adjacency))  # [batch, vertex, d_model]
            residual = embedding + positional
            start_at_layer = 0
        else:
            residual = input
        for block in self.blocks[start_at_layer:stop_at_layer]:
            residual = block(residual)  # [batch, vertex, d_model]
        if stop_at_layer is not None:
            return residual
        if self.cfg.normalization_type is not None:
            residual = self.ln_final(residual)
        if return_type is None:
            return None
        if return_type != "logits":
            raise ValueError(
                f"return_type must be 'logits' or None, got {return_type!r}; "
                "compute a loss from the logits, e.g. torch.nn.functional.cross_entropy"
            )
        pooled = self.hook_pooled(residual.mean(dim=1))  # [batch, d_model]
        return self.unembed(pooled[:, None, :])[:, 0, :]  # [batch, 2]


def as_adjacency_batch(
    graph: GraphInput,
    n_vertices: int = N_VERTICES,
    dtype: torch.dtype = torch.float32,
    device: Union[str, torch.device, None] = None,
) -> Float[Tensor, "batch vertex vertex"]:
    """Validate a graph or batch of graphs and return float adjacency matrices ``[batch, n, n]``.

    Accepts a ``networkx.Graph`` with ``n_vertices`` vertices, or a tensor / numpy array of
    shape ``[n, n]`` or ``[batch, n, n]`` holding 0/1 floats, symmetric, with a zero diagonal.
    Raises ``ValueError`` naming the problem otherwise.
    """
    if isinstance(graph, nx.Graph):
        adjacency = adjacency_from_graph(graph, n_vertices)
    elif isinstance(graph, np.ndarray):
        if not (np.issubdtype(graph.dtype, np.floating) or graph.dtype == np.bool_ or np.issubdtype(graph.dtype, np.integer)):
            raise ValueError(f"adjacency has numpy dtype {graph.dtype}; pass 0/1 floats, e.g. adjacency.astype(np.float32)")
        adjacency = torch.from_numpy(np.ascontiguousarray(graph))
    elif isinstance(graph, Tensor):
        adjacency = graph
    else:
        raise ValueError(
            f"expected an adjacency matrix (torch.Tensor [10, 10] or [batch, 10, 10]) or a networkx.Graph, "
            f"got {type(graph).__name__}; convert a graph with adjacency_from_graph(G)"
        )
    if not adjacency.is_floating_point():
        raise ValueError(
            f"adjacency has dtype {adjacency.dtype}; the model takes 0/1 floats: pass adjacency.float()"
        )
    if adjacency.ndim == 2:
        adjacency = adjacency[None]
    if adjacency.ndim != 3:
        raise ValueError(
            f"adjacency has shape {tuple(adjacency.shape)}; expected [{n_vertices}, {n_vertices}] for one "
            f"graph or [batch, {n_vertices}, {n_vertices}]"
        )
    if adjacency.shape[1] != adjacency.shape[2]:
        raise ValueError(
            f"adjacency has shape {tuple(adjacency.shape)}, not square; an adjacency matrix is "
            f"[{n_vertices}, {n_vertices}] (row i lists vertex i's neighbours)"
        )
    if adjacency.shape[1] != n_vertices:
        raise ValueError(
            f"adjacency is for {adjacency.shape[1]} vertices but the model reads {n_vertices}; pad a smaller "
            f"graph with isolated vertices: adjacency_from_graph(G, pad=True)"
        )
    if adjacency.shape[0] == 0:
        raise ValueError("the batch of adjacency matrices is empty; pass at least one graph")
    adjacency = adjacency.to(device=device, dtype=dtype)
    if not ((adjacency == 0) | (adjacency == 1)).all():
        raise ValueError(
            "adjacency has entries other than 0 and 1; a simple graph's adjacency matrix is 0/1 "
            "(use (weights != 0).float() for a weighted matrix)"
        )
    if (adjacency != adjacency.transpose(1, 2)).any():
        raise ValueError(
            "adjacency is not symmetric; the graphs are undirected, so use "
            "((adjacency + adjacency.transpose(-1, -2)) > 0).float()"
        )
    if adjacency.diagonal(dim1=1, dim2=2).any():
        raise ValueError(
            "adjacency has self-loops (1s on the diagonal); clear them with adjacency.diagonal(dim1=-2, dim2=-1).zero_()"
        )
    return adjacency


@torch.no_grad()
def predict(model: PlanarityTransformer, graph: GraphInput) -> Int[Tensor, "batch"]:
    """The model's answer for a graph or batch of graphs: 1 = planar, 0 = not (on the CPU)."""
    was_training = model.training
    model.eval()
    try:
        return model(graph).argmax(dim=-1).cpu()
    finally:
        model.train(was_training)


def build_model(model_config: dict[str, Any]) -> PlanarityTransformer:
    """A freshly initialised model for ``model_config`` (see :data:`DEFAULT_MODEL_CONFIG`).

    Initialisation: TransformerLens's "gpt2" (weight matrices normal with std ``0.8 / sqrt(d_model)``,
    biases zero), then ``W_E`` Kaiming-uniform as a linear map from the 10 adjacency columns
    (bound ``1 / sqrt(10)``) and ``W_pos ~ N(0, pos_init_std^2)``, all from ``seed``.
    """
    model_config = dict(model_config)
    pos_init_std = float(model_config.pop("pos_init_std", 1.0))
    config = TransformerConfig.from_dict(dict(model_config, device="cpu"))
    model = PlanarityTransformer(config)
    generator = torch.Generator().manual_seed(config.seed if config.seed is not None else 0)
    with torch.no_grad():
        fan = model.embed.W_E.shape[0]
        bound = 1.0 / math.sqrt(fan)
        model.embed.W_E.copy_(torch.rand(model.embed.W_E.shape, generator=generator) * 2 * bound - bound)
        model.pos_embed.W_pos.copy_(torch.randn(model.pos_embed.W_pos.shape, generator=generator) * pos_init_std)
    return model
