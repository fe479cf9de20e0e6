"""The interactive attention-on-the-graph view (utils.planarity.attention_view)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from html.parser import HTMLParser

import networkx as nx
import numpy as np
import pytest
import torch
from IPython.display import HTML

from utils.planarity import data
from utils.planarity.attention_view import attention_on_graph, attention_on_graph_html, vertex_positions
from utils.planarity.model import DEFAULT_MODEL_CONFIG, build_model

NODE = shutil.which("node")


@pytest.fixture(scope="module")
def model():
    return build_model(DEFAULT_MODEL_CONFIG).eval()


@pytest.fixture(scope="module")
def petersen_html(model):
    return attention_on_graph_html(model, nx.petersen_graph(), title="Petersen </script><b>")


class _Scripts(HTMLParser):
    """Collects every <script>'s attributes and text, and every element id."""

    def __init__(self):
        super().__init__()
        self.scripts: list[tuple[dict, str]] = []
        self.ids: list[str] = []
        self._open: dict | None = None

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        if "id" in attributes:
            self.ids.append(attributes["id"])
        if tag == "script":
            self._open = attributes
            self.scripts.append((attributes, ""))

    def handle_data(self, text):
        if self._open is not None:
            attributes, body = self.scripts[-1]
            self.scripts[-1] = (attributes, body + text)

    def handle_endtag(self, tag):
        if tag == "script":
            self._open = None


def parse(html: str) -> _Scripts:
    parser = _Scripts()
    parser.feed(html)
    parser.close()
    return parser


def embedded_data(html: str) -> dict:
    (payload,) = [body for attributes, body in parse(html).scripts if attributes.get("type") == "application/json"]
    return json.loads(payload)


def inline_script(html: str) -> str:
    (code,) = [body for attributes, body in parse(html).scripts if attributes.get("type") != "application/json"]
    return code


def cached_patterns(model, adjacency: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        _, cache = model.run_with_cache(adjacency[None])
    return torch.stack([cache["pattern", layer][0] for layer in range(model.cfg.n_layers)]).numpy()


def test_embeds_every_pattern_of_every_layer_and_head(model, petersen_html):
    payload = embedded_data(petersen_html)
    patterns = np.array(payload["patterns"])
    assert patterns.shape == (2, 8, 10, 10)
    expected = cached_patterns(model, data.adjacency_from_graph(nx.petersen_graph()))
    np.testing.assert_allclose(patterns, expected, atol=1e-5)
    assert not np.allclose(patterns[0], patterns[1])  # layers not mixed up
    assert len(payload["positions"]) == 10


def test_tensor_numpy_and_graph_inputs_give_the_same_patterns(model):
    adjacency = data.named_graphs()["wheel"]
    from_tensor = np.array(embedded_data(attention_on_graph_html(model, adjacency))["patterns"])
    from_numpy = np.array(embedded_data(attention_on_graph_html(model, adjacency.numpy()))["patterns"])
    from_graph = np.array(embedded_data(attention_on_graph_html(model, data.graph_from_adjacency(adjacency)))["patterns"])
    np.testing.assert_allclose(from_tensor, cached_patterns(model, adjacency), atol=1e-5)
    np.testing.assert_array_equal(from_tensor, from_numpy)
    np.testing.assert_array_equal(from_tensor, from_graph)
    view = attention_on_graph(model, adjacency[None], title="wheel")  # a batch of one is fine
    assert isinstance(view, HTML) and "wheel" in view.data


def test_draws_the_graph_edges_and_all_vertices(model):
    graph = nx.cycle_graph(10)
    html = attention_on_graph_html(model, graph)
    edges = parse(html).ids
    assert sum(1 for element_id in edges if re.search(r"-node-\d+$", element_id)) == 10
    assert html.count('stroke="#9e9e9e"') == graph.number_of_edges()


def test_self_contained_no_external_resources(petersen_html):
    assert "<script src" not in petersen_html.lower()
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", petersen_html, re.IGNORECASE)
    assert "ipywidgets" not in petersen_html and "require(" not in petersen_html
    # The user's title is escaped: it cannot close the script or inject markup.
    assert "Petersen &lt;/script&gt;&lt;b&gt;" in petersen_html
    assert petersen_html.lower().count("</script>") == 2


def test_element_ids_are_unique_per_call(model):
    first = parse(attention_on_graph_html(model, nx.petersen_graph())).ids
    second = parse(attention_on_graph_html(model, nx.petersen_graph())).ids
    assert len(first) == len(set(first)) > 10
    assert not set(first) & set(second)


def test_bad_input_raises_the_models_clear_error(model):
    with pytest.raises(ValueError, match="9 vertices but the model reads 10"):
        attention_on_graph_html(model, torch.zeros(9, 9))
    with pytest.raises(ValueError, match="9 vertices but 10 are expected"):
        attention_on_graph_html(model, nx.cycle_graph(9))
    with pytest.raises(ValueError, match="not symmetric"):
        attention_on_graph_html(model, torch.triu(torch.ones(10, 10), diagonal=1))
    with pytest.raises(ValueError, match="one graph, got a batch of 2"):
        attention_on_graph_html(model, torch.zeros(2, 10, 10))
    with pytest.raises(ValueError, match="unknown layout"):
        attention_on_graph_html(model, nx.petersen_graph(), layout="hexagonal")


def test_layouts_are_deterministic_and_fit_the_frame():
    graph = nx.petersen_graph()
    assert vertex_positions(graph) == vertex_positions(graph)
    for layout in ("auto", "spring", "circular"):
        coordinates = np.array(list(vertex_positions(graph, layout).values()))
        assert coordinates.shape == (10, 2) and np.abs(coordinates).max() == pytest.approx(1.0)
    # Disconnected graphs (isolated vertices) fall back to a circle, every vertex distinct.
    coordinates = np.array(list(vertex_positions(nx.empty_graph(10)).values()))
    assert len({tuple(np.round(point, 6)) for point in coordinates}) == 10


# A tiny stand-in for the browser's DOM: just what the view's script touches.
_FAKE_DOM = r"""
class FakeElement {
  constructor(id) { this.id = id; this.attributes = {}; this.children = []; this.listeners = {};
                    this.textContent = ""; this.value = "0"; }
  setAttribute(key, value) { this.attributes[key] = String(value); }
  getAttribute(key) { return key in this.attributes ? this.attributes[key] : null; }
  addEventListener(type, listener) { (this.listeners[type] = this.listeners[type] || []).push(listener); }
  fire(type) { (this.listeners[type] || []).forEach(function (listener) { listener({}); }); }
  appendChild(child) { this.children.push(child); return child; }
  removeChild(child) { this.children.splice(this.children.indexOf(child), 1); return child; }
  get firstChild() { return this.children.length ? this.children[0] : null; }
  getElementsByClassName(name) { return groups; }
}
const registry = {};
const groups = [];
for (let vertex = 0; vertex < 10; vertex++) {
  const group = new FakeElement(null); group.setAttribute("data-vertex", vertex); groups.push(group);
}
globalThis.document = {
  getElementById(id) { return registry[id] || (registry[id] = new FakeElement(id)); },
  createElementNS(namespace, name) { const node = new FakeElement(null); node.tag = name; return node; },
};
document.getElementById(UID + "-data").textContent = PAYLOAD;
document.getElementById(UID + "-head").value = "0";
function snapshot() {
  const attention = document.getElementById(UID + "-attention").children;
  return {
    weights: groups.map(function (_, k) { return document.getElementById(UID + "-weight-" + k).textContent; }),
    lines: attention.filter(function (node) { return node.tag === "line"; }).length,
    rings: attention.filter(function (node) { return node.tag === "circle"; }).length,
    query_stroke: groups.map(function (_, k) { return document.getElementById(UID + "-node-" + k).getAttribute("stroke-width"); }),
    status: document.getElementById(UID + "-status").textContent,
  };
}
"""

_INTERACTION = r"""
const steps = {initial: snapshot()};
groups[3].fire("mouseenter"); steps.hover3 = snapshot();
document.getElementById(UID + "-svg").fire("mouseleave"); steps.left = snapshot();
groups[7].fire("click"); steps.click7 = snapshot();
document.getElementById(UID + "-layer").value = "1"; document.getElementById(UID + "-layer").fire("change");
steps.layer1 = snapshot();
document.getElementById(UID + "-head").value = "mean"; document.getElementById(UID + "-head").fire("change");
steps.mean = snapshot();
console.log(JSON.stringify(steps));
"""


@pytest.mark.skipif(NODE is None, reason="node is not installed")
def test_inline_script_is_valid_javascript(petersen_html, tmp_path):
    script = tmp_path / "view.js"
    script.write_text(inline_script(petersen_html))
    result = subprocess.run([NODE, "--check", str(script)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr


@pytest.mark.skipif(NODE is None, reason="node is not installed")
def test_hover_click_and_selects_show_the_right_weights(model, petersen_html, tmp_path):
    uid = re.search(r'<div id="(planattn-[0-9a-f]+)"', petersen_html).group(1)
    payload = [body for attributes, body in parse(petersen_html).scripts if attributes.get("type") == "application/json"][0]
    harness = (
        f"const UID = {json.dumps(uid)};\nconst PAYLOAD = {json.dumps(payload)};\n"
        + _FAKE_DOM + inline_script(petersen_html) + _INTERACTION
    )
    script = tmp_path / "harness.js"
    script.write_text(harness)
    result = subprocess.run([NODE, str(script)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    steps = json.loads(result.stdout)
    patterns = cached_patterns(model, data.adjacency_from_graph(nx.petersen_graph()))

    def shown(step):  # the weight labels drawn at the 10 vertices, as numbers
        return np.array([float(text) for text in steps[step]["weights"]])

    def labels(row):  # what the labels should say, to their 2 decimals
        return pytest.approx(np.asarray(row, dtype=float), abs=0.0051)

    assert all(re.fullmatch(r"\d\.\d\d", text) for text in steps["initial"]["weights"])
    assert shown("initial") == labels(patterns[0, 0, 0])  # layer 0, head 0, vertex 0
    assert shown("hover3") == labels(patterns[0, 0, 3])
    assert steps["hover3"]["query_stroke"][3] == "4" and steps["hover3"]["query_stroke"][0] == "1.5"
    assert steps["hover3"]["lines"] == 9 and steps["hover3"]["rings"] == 1  # 9 arrows + self-attention ring
    assert shown("left") == labels(patterns[0, 0, 0])  # back to the pinned vertex
    assert shown("click7") == labels(patterns[0, 0, 7]) and "pinned" in steps["click7"]["status"]
    assert shown("layer1") == labels(patterns[1, 0, 7])
    assert shown("mean") == labels(patterns[1, :, 7].mean(axis=0))
    assert "mean over heads" in steps["mean"]["status"]
