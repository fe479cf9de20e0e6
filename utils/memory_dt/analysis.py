"""Helpers for the Chapter 2 notebook that are not the lesson itself.

- :func:`render_episode`: the frames of an episode, replayed in an ``rgb_array`` environment;
- :func:`head_names`: ``"L0H0" ... "L2H7"`` in the order of a flattened ``[layer, head]`` axis;
- :func:`long_data_frame`: a tensor as a long pandas table, one row per entry, named axes;
- :func:`strongest`: the ``k`` largest and ``k`` smallest scores of each group of a long table;
- :func:`network_figure`: a plotly drawing of a weighted bipartite graph (no external JavaScript,
  so it works offline in JupyterLab and on Colab);
- :func:`decision_step`: the step of an episode's first turn;
- :func:`ov_svd`: the thin SVD of every head's OV circuit from its two factors;
- :func:`gain_against_random_directions`: how much more a head's OV circuit amplifies one direction
  than random directions (a baseline for "this head reads X").

Playing the agent with forced action prefixes lives in :mod:`utils.memory_dt.behaviour`.
"""

from __future__ import annotations

from typing import Sequence

import networkx as nx
import numpy as np
import pandas as pd
import plotly.graph_objects as go
import torch
from jaxtyping import Float, Int, UInt8
from torch import Tensor

from utils.memory_dt.env import CONFIGURATIONS, make_env
from utils.plotting import TEMPLATE


def render_episode(configuration: int, actions: Sequence[int] | Tensor) -> UInt8[np.ndarray, "frame height width 3"]:
    """Replay ``actions`` from the start of ``configuration`` and return every frame (start included).

    Frames are MiniGrid's full-grid ``rgb_array`` renderings (the agent's view is highlighted).
    """
    if not 0 <= int(configuration) < len(CONFIGURATIONS):
        raise ValueError(f"configuration must lie in 0..{len(CONFIGURATIONS) - 1}, got {configuration!r}")
    env = make_env(render_mode="rgb_array")
    env.reset(options={"configuration": int(configuration)})
    frames = [env.render()]
    for action in [int(action) for action in actions]:
        _, _, terminated, truncated, _ = env.step(action)
        frames.append(env.render())
        if terminated or truncated:
            break
    env.close()
    return np.stack(frames)


def head_names(n_layers: int, n_heads: int) -> list[str]:
    """``"L{layer}H{head}"`` for every head, layer-major (the order of ``tensor.flatten(0, 1)``)."""
    return [f"L{layer}H{head}" for layer in range(n_layers) for head in range(n_heads)]


def long_data_frame(
    values: Tensor,
    dimension_names: Sequence[str],
    labels: dict[str, Sequence] | None = None,
    value_name: str = "score",
) -> pd.DataFrame:
    """One row per entry of ``values``: a column per axis (its index, or ``labels[name][index]``) and the value.

    ``dimension_names`` names the axes in order; ``labels`` optionally maps an axis name to the
    label of each of its indices (e.g. ``{"neuron": ["L2N0", ...]}``).
    """
    if values.ndim != len(dimension_names):
        raise ValueError(
            f"values has {values.ndim} axes but {len(dimension_names)} names were given: {list(dimension_names)}"
        )
    array = values.detach().cpu().numpy()
    grids = np.meshgrid(*[np.arange(size) for size in array.shape], indexing="ij")
    columns: dict[str, object] = {}
    for name, grid in zip(dimension_names, grids):
        indices = grid.reshape(-1)
        if labels and name in labels:
            names = np.asarray(list(labels[name]), dtype=object)
            if len(names) != array.shape[list(dimension_names).index(name)]:
                raise ValueError(f"labels[{name!r}] has {len(names)} entries for an axis of size "
                                 f"{array.shape[list(dimension_names).index(name)]}")
            columns[name] = names[indices]
        else:
            columns[name] = indices
    columns[value_name] = array.reshape(-1)
    return pd.DataFrame(columns)


def strongest(table: pd.DataFrame, by: Sequence[str], k: int = 3, value: str = "score") -> pd.DataFrame:
    """For each group of ``by``, its ``k`` highest and ``k`` lowest rows by ``value``, sorted within the group."""
    groups = table.groupby(list(by), sort=True)[value]
    keep = groups.nlargest(k).index.get_level_values(-1).union(groups.nsmallest(k).index.get_level_values(-1))
    return table.loc[keep].sort_values(list(by) + [value], ascending=[True] * len(by) + [False]).reset_index(drop=True)


def network_figure(
    edges: pd.DataFrame, source: str, target: str, value: str = "score", title: str = "",
) -> go.Figure:
    """Draw ``edges`` (one row per edge) as a two-column network: sources on the left, targets on the right.

    Edge width follows ``|value|``; red edges are positive, blue negative. Hovering a node lists its
    edges. Node positions come from networkx's bipartite layout, so the figure is plain plotly.
    """
    graph = nx.Graph()
    sources = sorted(edges[source].unique())
    targets = sorted(edges[target].unique())
    graph.add_nodes_from(sources, side=0)
    graph.add_nodes_from(targets, side=1)
    for row in edges.itertuples(index=False):
        graph.add_edge(getattr(row, source), getattr(row, target), weight=float(getattr(row, value)))
    positions = nx.bipartite_layout(graph, sources, align="vertical")
    largest = max(float(edges[value].abs().max()), 1e-9)
    figure = go.Figure()
    for node_a, node_b, data in graph.edges(data=True):
        (x0, y0), (x1, y1) = positions[node_a], positions[node_b]
        weight = data["weight"]
        figure.add_trace(go.Scatter(
            x=[x0, x1], y=[y0, y1], mode="lines", hoverinfo="text", showlegend=False,
            text=f"{node_a} → {node_b}: {weight:+.3f}",
            line={"width": 0.5 + 5 * abs(weight) / largest, "color": "firebrick" if weight > 0 else "royalblue"},
            opacity=0.7,
        ))
    for side, nodes, color in ((0, sources, "seagreen"), (1, targets, "darkorange")):
        hover = [f"{node}<br>" + "<br>".join(
            f"{other}: {graph[node][other]['weight']:+.3f}" for other in graph[node]) for node in nodes]
        figure.add_trace(go.Scatter(
            x=[positions[node][0] for node in nodes], y=[positions[node][1] for node in nodes],
            mode="markers+text", text=list(nodes), hovertext=hover, hoverinfo="text",
            textposition="middle left" if side == 0 else "middle right",
            marker={"size": 12, "color": color},
            name=(f"{source}s" if side == 0 else f"{target}s").replace("_", " "),
        ))
    for color, meaning in (("firebrick", f"positive {value} (excites)"), ("royalblue", f"negative {value} (inhibits)")):
        # legend entries only, so that the colours of the edges are explained on the figure itself
        figure.add_trace(go.Scatter(x=[None], y=[None], mode="lines", line={"color": color, "width": 3}, name=meaning))
    figure.update_layout(
        title=title, template=TEMPLATE, height=max(400, 28 * max(len(sources), len(targets)) + 100),
        xaxis={"visible": False, "range": [-1.6, 1.6]}, yaxis={"visible": False},
    )
    return figure


def decision_step(actions: Int[Tensor, "step"]) -> int:
    """The first step whose action is a turn (left or right): where the episode's choice is made."""
    turns = torch.nonzero((actions == 0) | (actions == 1)).flatten()
    if len(turns) == 0:
        raise ValueError("this episode never turns, so it has no decision step")
    return int(turns[0])


def ov_svd(
    W_V: Float[Tensor, "... d_model d_head"], W_O: Float[Tensor, "... d_head d_model"]
) -> tuple[Float[Tensor, "... d_model d_head"], Float[Tensor, "... d_head"], Float[Tensor, "... d_head d_model"]]:
    """The thin SVD ``U, S, Vᵀ`` of every head's OV matrix ``W_V @ W_O``, without forming it.

    ``W_V W_O`` has rank at most ``d_head``, and LAPACK's SVD of such rank-deficient 256 x 256
    matrices is slow on CPU. Factor instead: ``W_V = Q_V R_V`` and ``W_Oᵀ = Q_O R_O`` (QR), so
    ``W_V W_O = Q_V (R_V R_Oᵀ) Q_Oᵀ``, and the SVD of the small ``d_head x d_head`` middle gives
    the same singular values and directions (up to the sign of each pair). Columns of ``U`` are
    the directions a head reads, rows of ``Vᵀ`` the directions it writes, sorted by ``S``.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # these small decompositions get slower, not faster, on busy shared cores
    try:
        q_value, r_value = torch.linalg.qr(W_V.detach())
        q_output, r_output = torch.linalg.qr(W_O.detach().transpose(-1, -2))
        left, singular_values, right = torch.linalg.svd(r_value @ r_output.transpose(-1, -2))
    finally:
        torch.set_num_threads(threads)
    return q_value @ left, singular_values, right @ q_output.transpose(-1, -2)


def gain_against_random_directions(
    W_OV: Float[Tensor, "head d_model d_model"], direction: Float[Tensor, "d_model"], n_random: int = 1000,
    seed: int = 0,
) -> tuple[Float[Tensor, "head"], Float[Tensor, "head"]]:
    """How much more each head's OV circuit amplifies ``direction`` than a random direction.

    Returns ``(ratio, percentile)`` per head: ``ratio`` is ``‖u W_OV‖`` for the unit vector ``u``
    along ``direction``, divided by the mean of ``‖r W_OV‖`` over ``n_random`` random unit vectors
    ``r`` (Gaussian, drawn from ``seed``); ``percentile`` is the fraction of those random vectors that
    the direction beats. A ratio near 1 means the head treats the direction like any other.
    """
    if W_OV.ndim != 3 or W_OV.shape[-1] != W_OV.shape[-2] or direction.shape != W_OV.shape[-1:]:
        raise ValueError(
            f"W_OV must be [head, d_model, d_model] and direction [d_model], got {tuple(W_OV.shape)} and "
            f"{tuple(direction.shape)}; flatten (layer, head) first with W_OV.flatten(0, 1)"
        )
    if not isinstance(n_random, int) or n_random < 1:
        raise ValueError(f"n_random must be a positive int, got {n_random!r}")
    norm = direction.norm()
    if norm == 0:
        raise ValueError("direction is the zero vector; pass a difference of two different embeddings")
    generator = torch.Generator().manual_seed(seed)
    random = torch.randn(n_random, W_OV.shape[-1], generator=generator)
    random = random / random.norm(dim=-1, keepdim=True)
    random_gain = torch.einsum("rm,hmn->hrn", random, W_OV.detach()).norm(dim=-1)  # [head, random]
    gain = torch.einsum("m,hmn->hn", direction.detach() / norm, W_OV.detach()).norm(dim=-1)  # [head]
    return gain / random_gain.mean(dim=-1), (random_gain < gain[:, None]).float().mean(dim=-1)
