"""The course's plotly template and the heatmap helper's readability options."""

from __future__ import annotations

import plotly.express as px
import plotly.io as pio
import pytest
import torch

from utils.plotting import MAX_LABELLED_TICKS, TEMPLATE, imshow, line, token_attention


def test_importing_the_helpers_makes_the_course_template_plotlys_default():
    assert pio.templates.default == TEMPLATE
    figure = px.scatter(x=[0, 1], y=[1, 0])  # made with plotly.express directly, as notebooks do
    assert list(figure.layout.template.layout.colorway) == list(px.colors.qualitative.Dark24)  # not plotly's grey default
    assert figure.layout.template.layout.plot_bgcolor == pio.templates["simple_white"].layout.plot_bgcolor


def test_sixteen_lines_get_sixteen_colours():
    figure = line(torch.randn(16, 5), names=[f"line {index}" for index in range(16)], title="t", x_title="x", y_title="y")
    assert len(set(pio.templates[TEMPLATE].layout.colorway)) >= len(figure.data)


def test_color_limit_caps_the_scale_so_a_dominant_entry_does_not_hide_the_rest():
    values = torch.zeros(3, 3)
    values[0, 0], values[1, 2] = 100.0, -2.0
    figure = imshow(values, title="t", x_title="x", y_title="y", color_limit=2.0)
    assert (figure.layout.coloraxis.cmin, figure.layout.coloraxis.cmax) == (-2.0, 2.0)
    assert imshow(values, title="t", x_title="x", y_title="y").layout.coloraxis.cmax == 100.0
    with pytest.raises(ValueError, match="color_limit must be a positive number"):
        imshow(values, title="t", x_title="x", y_title="y", color_limit=0)


def test_every_named_row_is_labelled_up_to_the_limit():
    names = [f"row {index}" for index in range(21)]
    figure = imshow(torch.randn(21, 4), y=names, title="t", x_title="x", y_title="y")
    assert list(figure.layout.yaxis.ticktext) == names
    crowded = [f"row {index}" for index in range(MAX_LABELLED_TICKS + 1)]
    figure = imshow(torch.randn(len(crowded), 4), y=crowded, title="t", x_title="x", y_title="y")
    assert figure.layout.yaxis.ticktext is None


def test_the_course_template_keeps_the_title_off_the_top_edge_and_draws_shape_lines():
    layout = pio.templates[TEMPLATE].layout
    # plotly's title automargin clips the first line at the top edge and draws a second line above the figure
    assert layout.title.automargin is False and layout.margin.t >= 80  # room for two lines of 16 px
    assert layout.shapedefaults.line.width > 0  # simple_white's width 0 made add_shape lines invisible


def test_short_unnamed_heatmap_axes_label_every_index():
    figure = imshow(torch.randn(2, 8), title="t", x_title="head", y_title="layer", y=["0", "1"])
    assert (figure.layout.xaxis.dtick, figure.layout.xaxis.tick0) == (1, 0)  # heads 0..7, not 0, 2, 4, 6
    facets = imshow(torch.randn(3, 10, 10), title="t", x_title="key", y_title="query", facet_col_wrap=3)
    assert all(facets.layout[name].dtick == 1 for name in facets.layout if name.startswith(("xaxis", "yaxis")))
    long = imshow(torch.randn(4, 113), title="t", x_title="input", y_title="row")
    assert long.layout.xaxis.dtick is None  # 113 labels would overlap: plotly chooses


def test_log_axes_use_powers_of_ten():
    figure = line(torch.rand(2, 5), names=["a", "b"], title="t", x_title="x", y_title="y", log_y=True)
    assert (figure.layout.yaxis.type, figure.layout.yaxis.exponentformat) == ("log", "power")


def test_token_attention_embeds_its_javascript_and_checks_shapes():
    view = token_attention(["R0", "S0", "A0"], torch.full((2, 3, 3), 1 / 3), head_names=["L0H0", "L0H1"])
    assert "unpkg" not in view.data and "<script" in view.data  # no CDN: works with the browser offline
    assert '"R0"' in view.data and '"L0H1"' in view.data
    with pytest.raises(ValueError, match=r"\[head, query, key\] = \[2, 2, 2\]"):
        token_attention(["R0", "S0"], torch.ones(2, 3, 3), head_names=["L0H0", "L0H1"])


def test_no_notebook_overrides_the_course_template():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    for path in sorted(root.glob("chapters/*/*_solutions.ipynb")):
        text = path.read_text(encoding="utf-8")
        for template in pio.templates:
            if template != TEMPLATE:
                assert f'template=\\"{template}\\"' not in text, f"{path.name} uses plotly's {template!r}, not the course template"
