"""Plotly drawings of small graphs, with a subgraph (e.g. a Kuratowski certificate) highlighted.

:func:`draw_graphs` lays out several graphs side by side: every edge in grey, the edges of a
highlighted subgraph thick and red, its *branch vertices* (degree 3 or more inside the subgraph:
the corners of the K5 or K3,3 it subdivides) filled red. Hover over a vertex to see its number
and degree.
"""

from __future__ import annotations

from typing import Optional, Sequence

import networkx as nx
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from utils.planarity.attention_view import vertex_positions
from utils.planarity.data import graph_from_adjacency
from utils.planarity.model import GraphInput, as_adjacency_batch
from utils.plotting import TEMPLATE

EDGE_COLOUR = "#b0b0b0"
HIGHLIGHT_COLOUR = "#d62728"
VERTEX_COLOUR = "#1f77b4"
#: The widest figure :func:`draw_graphs` makes, in pixels: a notebook's output area in JupyterLab
#: (file browser open, 1400-pixel window) is about 960 pixels wide and cuts off anything wider.
MAX_WIDTH = 940


def _as_graph(graph: GraphInput) -> nx.Graph:
    if isinstance(graph, nx.Graph):
        return graph
    adjacency = as_adjacency_batch(graph, n_vertices=graph.shape[-1])
    if adjacency.shape[0] != 1:
        raise ValueError(f"expected one graph, got a batch of {adjacency.shape[0]}; pass adjacency[i]")
    return graph_from_adjacency(adjacency[0])


def _add_graph(
    figure: go.Figure, graph: nx.Graph, highlight: Optional[nx.Graph], row: int, col: int
) -> None:
    positions = vertex_positions(graph)
    highlighted = set()
    if highlight is not None:
        highlighted = {frozenset(edge) for edge in highlight.edges}
    for edges, colour, width in (
        ([edge for edge in graph.edges if frozenset(edge) not in highlighted], EDGE_COLOUR, 1.5),
        ([edge for edge in graph.edges if frozenset(edge) in highlighted], HIGHLIGHT_COLOUR, 3.5),
    ):
        xs, ys = [], []
        for u, v in edges:
            xs += [positions[u][0], positions[v][0], None]
            ys += [positions[u][1], positions[v][1], None]
        figure.add_trace(go.Scatter(x=xs, y=ys, mode="lines", line={"color": colour, "width": width},
                                    hoverinfo="skip", showlegend=False), row=row, col=col)
    branch = set() if highlight is None else {v for v in highlight.nodes if highlight.degree(v) >= 3}
    vertices = list(graph.nodes)
    figure.add_trace(go.Scatter(
        x=[positions[v][0] for v in vertices], y=[positions[v][1] for v in vertices],
        mode="markers+text", text=[str(v) for v in vertices], textfont={"color": "white", "size": 10},
        marker={"size": 18, "color": [HIGHLIGHT_COLOUR if v in branch else VERTEX_COLOUR for v in vertices],
                "line": {"color": "white", "width": 1}},
        hovertext=[f"vertex {v}, degree {graph.degree(v)}" + (" (branch vertex)" if v in branch else "")
                   for v in vertices],
        hoverinfo="text", showlegend=False,
    ), row=row, col=col)


#: Subplot titles are drawn at this font size; a title wider than its panel (about
#: ``0.55 * TITLE_FONT_SIZE`` pixels a character) is broken after its first ": " onto two lines.
TITLE_FONT_SIZE = 13


def _fit_title(title: str, size: int) -> str:
    if len(title) * 0.55 * TITLE_FONT_SIZE > size - 12 and ": " in title:
        return title.replace(": ", ":<br>", 1)
    return title


def draw_graphs(
    graphs: Sequence[GraphInput],
    highlights: Optional[Sequence[Optional[nx.Graph]]] = None,
    titles: Optional[Sequence[str]] = None,
    *,
    title: str = "",
    cols: int = 4,
    size: int = 260,
) -> go.Figure:
    """Draw each graph (a networkx graph or a ``[10, 10]`` adjacency matrix) in its own panel.

    ``highlights[i]``, when given and not ``None``, is a subgraph of ``graphs[i]`` (for instance
    a Kuratowski certificate) whose edges are drawn thick and red, with its branch vertices red.
    Each panel is ``size`` pixels square, smaller where ``cols`` panels would exceed :data:`MAX_WIDTH`.
    """
    graphs = [_as_graph(graph) for graph in graphs]
    if not graphs:
        raise ValueError("draw_graphs needs at least one graph")
    highlights = list(highlights) if highlights is not None else [None] * len(graphs)
    titles = list(titles) if titles is not None else [""] * len(graphs)
    if len(highlights) != len(graphs) or len(titles) != len(graphs):
        raise ValueError(
            f"got {len(graphs)} graphs, {len(highlights)} highlights and {len(titles)} titles; pass one of each per graph"
        )
    cols = max(1, min(cols, len(graphs)))
    rows = -(-len(graphs) // cols)
    size = min(size, (MAX_WIDTH - 40) // cols)  # panels shrink rather than spill out of the notebook
    titles = [_fit_title(text, size) for text in titles]
    two_lines = any("<br>" in text for text in titles)
    title_room = 2 * TITLE_FONT_SIZE + 14 if two_lines else TITLE_FONT_SIZE + 14  # pixels above each panel
    height = size * rows + title_room * rows + 60
    figure = make_subplots(rows=rows, cols=cols, subplot_titles=titles, horizontal_spacing=0.03,
                           vertical_spacing=min(0.3, title_room / height) if rows > 1 else 0.08)
    figure.update_annotations(font_size=TITLE_FONT_SIZE)  # the subplot titles (there are no other annotations)
    for index, (graph, highlight) in enumerate(zip(graphs, highlights)):
        _add_graph(figure, graph, highlight, index // cols + 1, index % cols + 1)
    figure.update_xaxes(visible=False, range=[-1.25, 1.25])
    figure.update_yaxes(visible=False, range=[-1.25, 1.25])
    figure.update_layout(title=title, template=TEMPLATE, width=size * cols + 40, height=height,
                         margin={"l": 20, "r": 20, "t": 64 + title_room, "b": 10})
    return figure
