"""The course's plotly template and the heatmap helper's readability options."""

from __future__ import annotations

import plotly.express as px
import plotly.io as pio
import pytest
import torch

from utils.plotting import MAX_LABELLED_TICKS, TEMPLATE, imshow, line


def test_importing_the_helpers_makes_the_course_template_plotlys_default():
    assert pio.templates.default == TEMPLATE
    figure = px.scatter(x=[0, 1], y=[1, 0])  # made with plotly.express directly, as notebooks do
    assert figure.layout.template.layout.title.automargin is True  # not plotly's grey default
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
