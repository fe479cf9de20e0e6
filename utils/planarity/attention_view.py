"""Attention drawn on the graph itself: an interactive, offline view for notebooks.

:func:`attention_on_graph` runs the model on one graph, collects every attention pattern
(``cache["pattern", layer]``, all layers and heads) and returns an ``IPython.display.HTML``
that draws the graph (vertices laid out by networkx, edges as grey lines). Pick a layer and a
head (or the mean over heads) in the two drop-downs, then hover over a vertex: arrows go from
that query vertex to every vertex it attends to, their width proportional to the attention
weight, and each vertex shows the weight it receives. Clicking a vertex pins it as the query
(hovering elsewhere previews; leaving the drawing goes back to the pinned one).

The HTML is self-contained: inline SVG, inline vanilla JavaScript, the patterns embedded as
JSON. No CDN, no ipywidgets, no kernel callbacks, so it works offline in JupyterLab and on
Colab, and keeps working in a saved notebook. Element ids are unique per call, so several views
can live in one notebook.
"""

from __future__ import annotations

import html
import json
import uuid
from typing import Any, Mapping, Optional, Sequence, Union

import networkx as nx
import numpy as np
import torch
from IPython.display import HTML
from jaxtyping import Float
from torch import Tensor

from utils.planarity.data import graph_from_adjacency
from utils.planarity.model import PLANAR, GraphInput, PlanarityTransformer

Layout = Union[str, Mapping[int, Sequence[float]]]
LAYOUTS = ("auto", "kamada_kawai", "circular", "spring")

_SIZE = 440  # width and height of the drawing, in pixels
_MARGIN = 46  # room around the vertices for the weight labels
_VERTEX_RADIUS = 15
_MAX_ARROW_WIDTH = 14.0  # stroke width, in pixels, of an arrow of weight 1


@torch.no_grad()
def attention_patterns(
    model: PlanarityTransformer, graph_or_adjacency: GraphInput
) -> tuple[Float[Tensor, "vertex vertex"], Float[Tensor, "layer head query key"], Float[Tensor, "2"]]:
    """Run the model on ONE graph; return its adjacency, all attention patterns and the logits.

    ``patterns[layer, head, q, k]`` is how much vertex ``q`` attends to vertex ``k`` (each row
    sums to 1), exactly ``cache["pattern", layer][0, head]``. Everything is returned on the CPU.
    Raises ``ValueError`` (from the model's input check) for a malformed graph.
    """
    adjacency = model.to_adjacency(graph_or_adjacency)  # [batch, vertex, vertex], validated
    if adjacency.shape[0] != 1:
        raise ValueError(
            f"attention_on_graph draws one graph, got a batch of {adjacency.shape[0]}; "
            "pass a single graph, e.g. adjacency[i]"
        )
    was_training = model.training
    model.eval()
    try:
        logits, cache = model.run_with_cache(adjacency, names_filter=lambda name: name.endswith("hook_pattern"))
    finally:
        model.train(was_training)
    patterns = torch.stack([cache["pattern", layer][0] for layer in range(model.cfg.n_layers)])
    return adjacency[0].cpu(), patterns.float().cpu(), logits[0].float().cpu()


def vertex_positions(graph: nx.Graph, layout: Layout = "auto") -> dict[int, tuple[float, float]]:
    """Deterministic 2-D positions of the graph's vertices, scaled into ``[-1, 1]``.

    ``layout``: ``"auto"`` (a seeded spring layout when the graph is connected, else a circle,
    which keeps isolated vertices in view), ``"spring"`` (seed 0), ``"circular"``,
    ``"kamada_kawai"`` (needs scipy), or a dict ``{vertex: (x, y)}`` of your own.
    """
    if isinstance(layout, Mapping):
        missing = [vertex for vertex in graph.nodes if vertex not in layout]
        if missing:
            raise ValueError(
                f"layout has no position for vertices {missing}; give (x, y) for all of 0..{len(graph) - 1}"
            )
        positions = {vertex: np.asarray(layout[vertex], dtype=float) for vertex in graph.nodes}
    elif layout == "circular" or (layout == "auto" and not (len(graph) and nx.is_connected(graph))):
        positions = nx.circular_layout(graph)
    elif layout in ("auto", "spring"):
        positions = nx.spring_layout(graph, seed=0)  # numpy only for small graphs; seeded
    elif layout == "kamada_kawai":
        try:
            positions = nx.kamada_kawai_layout(graph)  # starts from the circular layout: deterministic
        except ImportError:
            raise ValueError(
                "layout='kamada_kawai' needs scipy (pip install scipy); use layout='spring' or 'circular'"
            ) from None
    else:
        raise ValueError(f"unknown layout {layout!r}; use one of {LAYOUTS} or a dict {{vertex: (x, y)}}")
    coordinates = np.array([positions[vertex] for vertex in graph.nodes], dtype=float).reshape(-1, 2)
    if coordinates.size and not np.isfinite(coordinates).all():
        raise ValueError("layout has non-finite coordinates; give finite (x, y) for every vertex")
    centre = (coordinates.max(axis=0) + coordinates.min(axis=0)) / 2 if coordinates.size else np.zeros(2)
    extent = np.abs(coordinates - centre).max() if coordinates.size else 0.0
    scale = 1.0 / extent if extent > 0 else 1.0
    return {vertex: tuple(((coordinates[i] - centre) * scale).tolist()) for i, vertex in enumerate(graph.nodes)}


def _json_for_script(value: Any) -> str:
    """JSON that is safe inside a <script> element (no '</script>', '<!--' or '&' surprises)."""
    text = json.dumps(value, allow_nan=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def attention_on_graph_html(
    model: PlanarityTransformer,
    graph_or_adjacency: GraphInput,
    *,
    title: Optional[str] = None,
    layout: Layout = "auto",
) -> str:
    """The HTML string behind :func:`attention_on_graph` (same arguments)."""
    adjacency, patterns, logits = attention_patterns(model, graph_or_adjacency)
    graph = graph_from_adjacency(adjacency)  # vertices 0..9 = the model's positions
    positions = vertex_positions(graph, layout)
    n_layers, n_heads, n_vertices, _ = patterns.shape

    half = (_SIZE - 2 * _MARGIN) / 2
    pixel = {v: (_SIZE / 2 + x * half, _SIZE / 2 - y * half) for v, (x, y) in positions.items()}
    p_planar = torch.softmax(logits, dim=-1)[PLANAR].item()
    is_planar = nx.check_planarity(graph)[0]
    data = {
        "n_layers": n_layers,
        "n_heads": n_heads,
        "n_vertices": n_vertices,
        "positions": [[round(pixel[v][0], 2), round(pixel[v][1], 2)] for v in range(n_vertices)],
        "radius": _VERTEX_RADIUS,
        "max_width": _MAX_ARROW_WIDTH,
        # patterns[layer][head][query][key]
        "patterns": np.round(patterns.numpy().astype(np.float64), 6).tolist(),
    }

    uid = "planattn-" + uuid.uuid4().hex[:12]
    if title is None:
        title = "Attention on the graph"
    edge_lines = "".join(
        f'<line x1="{pixel[a][0]:.2f}" y1="{pixel[a][1]:.2f}" x2="{pixel[b][0]:.2f}" y2="{pixel[b][1]:.2f}" '
        'stroke="#9e9e9e" stroke-width="2"/>'
        for a, b in graph.edges
    )
    vertices = "".join(
        f'<g class="{uid}-vertex" data-vertex="{v}" style="cursor:pointer">'
        f'<circle id="{uid}-halo-{v}" cx="{x:.2f}" cy="{y:.2f}" r="{_VERTEX_RADIUS}" fill="#e6550d" fill-opacity="0"/>'
        f'<circle id="{uid}-node-{v}" cx="{x:.2f}" cy="{y:.2f}" r="{_VERTEX_RADIUS}" fill="#ffffff" fill-opacity="0.55" '
        'stroke="#424242" stroke-width="1.5"/>'
        f'<text x="{x:.2f}" y="{y + 4.5:.2f}" text-anchor="middle" font-size="13" font-weight="bold" '
        f'fill="#212121" pointer-events="none">{v}</text>'
        f'<text id="{uid}-weight-{v}" x="{x:.2f}" y="{y - _VERTEX_RADIUS - 6:.2f}" text-anchor="middle" '
        'font-size="11" fill="#a63603" pointer-events="none"></text>'
        "</g>"
        for v, (x, y) in pixel.items()
    )
    layer_options = "".join(f'<option value="{layer}">layer {layer}</option>' for layer in range(n_layers))
    head_options = '<option value="mean">mean over heads</option>' + "".join(
        f'<option value="{head}"{" selected" if head == 0 else ""}>head {head}</option>' for head in range(n_heads)
    )
    query_options = "".join(f'<option value="{v}">vertex {v}</option>' for v in range(n_vertices))
    summary = html.escape(
        f"model: P(planar) = {p_planar:.3f}; networkx: {'planar' if is_planar else 'not planar'}; "
        f"{graph.number_of_edges()} edges"
    )
    return f"""<div id="{uid}" style="font-family:sans-serif;font-size:13px;max-width:{_SIZE + 20}px">
<div style="font-weight:bold;font-size:15px;margin-bottom:4px">{html.escape(title)}</div>
<div style="margin-bottom:4px">
<label>Layer <select id="{uid}-layer">{layer_options}</select></label>
<label style="margin-left:8px">Head <select id="{uid}-head">{head_options}</select></label>
<label style="margin-left:8px">Query <select id="{uid}-query">{query_options}</select></label>
</div>
<svg id="{uid}-svg" width="{_SIZE}" height="{_SIZE}" viewBox="0 0 {_SIZE} {_SIZE}" xmlns="http://www.w3.org/2000/svg" style="background:#ffffff;border:1px solid #e0e0e0">
<defs><marker id="{uid}-arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="9" markerHeight="9" markerUnits="userSpaceOnUse" orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="#e6550d"/></marker></defs>
<g id="{uid}-edges">{edge_lines}</g>
<g id="{uid}-attention" pointer-events="none"></g>
<g id="{uid}-vertices">{vertices}</g>
</svg>
<div id="{uid}-status" style="margin-top:4px;color:#424242"></div>
<div style="margin-top:2px;color:#757575">{summary}. Hover over a vertex to see where it attends (arrows from the query to each key, width &#8733; weight, numbers = weights); click to pin it.</div>
<script type="application/json" id="{uid}-data">{_json_for_script(data)}</script>
<script>
{_SCRIPT.replace("__UID__", uid)}
</script>
</div>"""


def attention_on_graph(
    model: PlanarityTransformer,
    graph_or_adjacency: GraphInput,
    *,
    title: Optional[str] = None,
    layout: Layout = "auto",
) -> HTML:
    """An interactive drawing of where each vertex attends, for one graph; display it in a notebook.

    Args:
        model: a planarity model (trained or not).
        graph_or_adjacency: one graph: a ``networkx.Graph`` on 10 vertices (vertex ``i`` of the
            drawing is its ``i``-th node in sorted order) or an adjacency matrix ``[10, 10]``
            (tensor or numpy array; a batch of one is fine). Bad input raises ``ValueError``.
        title: heading above the drawing.
        layout: ``"auto"``, ``"kamada_kawai"``, ``"circular"``, ``"spring"`` or ``{vertex: (x, y)}``
            (see :func:`vertex_positions`).

    Choose the layer and the head (or "mean over heads") in the drop-downs; hover over a vertex
    to make it the query, click to pin it.
    """
    return HTML(attention_on_graph_html(model, graph_or_adjacency, title=title, layout=layout))


# The view's behaviour. "__UID__" is replaced by the element-id prefix of one call.
_SCRIPT = r"""(function () {
  "use strict";
  var uid = "__UID__";
  var root = document.getElementById(uid);
  if (!root || root.getAttribute("data-ready")) { return; }
  root.setAttribute("data-ready", "1");
  var data = JSON.parse(document.getElementById(uid + "-data").textContent);
  var SVG_NS = "http://www.w3.org/2000/svg";
  var layerSelect = document.getElementById(uid + "-layer");
  var headSelect = document.getElementById(uid + "-head");
  var querySelect = document.getElementById(uid + "-query");
  var svg = document.getElementById(uid + "-svg");
  var arrows = document.getElementById(uid + "-attention");
  var status = document.getElementById(uid + "-status");
  var pinned = 0;

  function weights(layer, head, query) {
    var n = data.n_vertices, row = [], h, k;
    if (head !== "mean") { return data.patterns[layer][Number(head)][query].slice(); }
    for (k = 0; k < n; k++) { row.push(0); }
    for (h = 0; h < data.n_heads; h++) {
      for (k = 0; k < n; k++) { row[k] += data.patterns[layer][h][query][k] / data.n_heads; }
    }
    return row;
  }

  function element(name, attributes) {
    var node = document.createElementNS(SVG_NS, name);
    for (var key in attributes) { node.setAttribute(key, String(attributes[key])); }
    return node;
  }

  function show(query) {
    var layer = Number(layerSelect.value), head = headSelect.value;
    var row = weights(layer, head, query), n = data.n_vertices, r = data.radius;
    var largest = Math.max.apply(null, row), k;
    while (arrows.firstChild) { arrows.removeChild(arrows.firstChild); }
    var qx = data.positions[query][0], qy = data.positions[query][1];
    for (k = 0; k < n; k++) {
      var w = row[k], relative = largest > 0 ? w / largest : 0;
      var width = Math.max(0.5, data.max_width * w);
      var opacity = (0.2 + 0.8 * relative).toFixed(3);
      if (k === query) {
        arrows.appendChild(element("circle", {cx: qx, cy: qy, r: r + 3 + width / 2, fill: "none",
          stroke: "#e6550d", "stroke-width": width, "stroke-opacity": opacity}));
      } else {
        var kx = data.positions[k][0], ky = data.positions[k][1];
        var dx = kx - qx, dy = ky - qy, length = Math.sqrt(dx * dx + dy * dy) || 1;
        var ux = dx / length, uy = dy / length, gap = r + 2;
        arrows.appendChild(element("line", {x1: qx + ux * gap, y1: qy + uy * gap,
          x2: kx - ux * (gap + 2), y2: ky - uy * (gap + 2), stroke: "#e6550d", "stroke-width": width,
          "stroke-opacity": opacity, "stroke-linecap": "round", "marker-end": "url(#" + uid + "-arrow)"}));
      }
      document.getElementById(uid + "-weight-" + k).textContent = w.toFixed(2);
      document.getElementById(uid + "-halo-" + k).setAttribute("fill-opacity", (0.6 * relative).toFixed(3));
      var node = document.getElementById(uid + "-node-" + k);
      node.setAttribute("stroke", k === query ? "#08519c" : "#424242");
      node.setAttribute("stroke-width", k === query ? "4" : "1.5");
      node.setAttribute("fill", k === query ? "#9ecae1" : "#ffffff");
    }
    var headName = head === "mean" ? "mean over heads" : "head " + head;
    status.textContent = "Layer " + layer + ", " + headName + ": vertex " + query +
      (query === pinned ? " (pinned)" : " (hover; click to pin)") + " attends most to vertex " +
      row.indexOf(largest) + " (" + largest.toFixed(2) + ").";
  }

  var vertices = root.getElementsByClassName(uid + "-vertex");
  for (var i = 0; i < vertices.length; i++) {
    (function (group) {
      var vertex = Number(group.getAttribute("data-vertex"));
      group.addEventListener("mouseenter", function () { show(vertex); });
      group.addEventListener("click", function () { pinned = vertex; querySelect.value = String(vertex); show(vertex); });
    })(vertices[i]);
  }
  svg.addEventListener("mouseleave", function () { show(pinned); });
  layerSelect.addEventListener("change", function () { show(pinned); });
  headSelect.addEventListener("change", function () { show(pinned); });
  querySelect.addEventListener("change", function () { pinned = Number(querySelect.value); show(pinned); });
  show(pinned);
})();"""
