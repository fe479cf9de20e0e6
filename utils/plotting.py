"""Small plotly helpers so that notebooks stay about the lesson, not the plotting.

Each helper takes tensors or arrays, labels its axes, and returns the figure (a notebook cell that
ends with the call shows it). Diverging data is centred on zero with a red-blue scale.

The course has one plotly template, ``"three_circuits"`` (:data:`TEMPLATE`): white background,
titles that push the plot down instead of being cut off, and 24 distinguishable line colours.
Importing this module makes it plotly's default, so figures made with ``plotly.express`` directly
in a notebook look like the helpers' figures rather than plotly's grey default.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import plotly.express as px
import plotly.graph_objects as go
import plotly.io as pio
import torch

TEMPLATE = "three_circuits"
#: A heatmap axis with at most this many named rows or columns labels every one of them (plotly
#: would otherwise drop every other label when they are dense).
MAX_LABELLED_TICKS = 40


def _course_template() -> go.layout.Template:
    template = go.layout.Template(pio.templates["simple_white"])
    template.layout.update(
        title={"automargin": True, "x": 0.02, "xanchor": "left", "font": {"size": 16}},
        margin={"t": 70, "l": 70, "r": 30, "b": 60},
        colorway=px.colors.qualitative.Dark24,
        font={"size": 12},
    )
    template.layout.xaxis.automargin = True
    template.layout.yaxis.automargin = True
    return template


pio.templates[TEMPLATE] = _course_template()
pio.templates.default = TEMPLATE


def to_numpy(values: Any) -> np.ndarray:
    """A tensor (on any device, with or without grad), list or array, as a numpy array."""
    if isinstance(values, torch.Tensor):
        return values.detach().float().cpu().numpy()
    return np.asarray(values)


def imshow(
    values: Any,
    *,
    title: str,
    x_title: str,
    y_title: str,
    color_title: str = "",
    x: Sequence | None = None,
    y: Sequence | None = None,
    facet_labels: Sequence[str] | None = None,
    facet_col_wrap: int | None = None,
    diverging: bool = True,
    color_limit: float | None = None,
    height: int | None = None,
    **kwargs: Any,
) -> go.Figure:
    """Heatmap of a 2D array, or of a stack of 2D arrays (first axis) drawn as labelled facets.

    ``color_limit`` caps the colour scale (diverging: ``[-limit, limit]``) when one large entry,
    such as a constant term, would make every other cell look blank; larger values saturate.
    Named rows or columns (``x``, ``y``), up to :data:`MAX_LABELLED_TICKS` of them, are all labelled.
    """
    array = to_numpy(values)
    if array.ndim not in (2, 3):
        raise ValueError(f"imshow draws 2D arrays or stacks of them, got shape {array.shape}")
    if color_limit is not None and not float(color_limit) > 0:
        raise ValueError(f"color_limit must be a positive number, got {color_limit!r}")
    color_kwargs: dict[str, Any] = {}
    if diverging:
        limit = float(color_limit) if color_limit is not None else (float(np.abs(array).max()) or 1.0)
        color_kwargs = {"color_continuous_scale": "RdBu", "zmin": -limit, "zmax": limit}
    elif color_limit is not None:
        color_kwargs = {"zmax": float(color_limit)}
    facet_kwargs: dict[str, Any] = {}
    if array.ndim == 3:
        facet_kwargs = {"facet_col": 0}
        if facet_col_wrap:
            facet_kwargs["facet_col_wrap"] = facet_col_wrap
    figure = px.imshow(
        array, x=x, y=y, title=title, template=TEMPLATE, aspect="auto",
        labels={"x": x_title, "y": y_title, "color": color_title}, height=height,
        **color_kwargs, **facet_kwargs, **kwargs,
    )
    if array.ndim == 3 and facet_labels is not None:
        labels = list(facet_labels)
        figure.for_each_annotation(lambda note: note.update(text=labels[int(note.text.split("=")[-1])]))
    for names, update in ((x, figure.update_xaxes), (y, figure.update_yaxes)):
        if names is not None and len(names) <= MAX_LABELLED_TICKS:
            update(tickmode="array", tickvals=list(names), ticktext=[str(name) for name in names])
    return figure


def line(
    y: Any,
    *,
    title: str,
    x_title: str,
    y_title: str,
    x: Any = None,
    names: Sequence[str] | None = None,
    log_y: bool = False,
    **kwargs: Any,
) -> go.Figure:
    """One line, or one line per row of a 2D array (named by ``names``)."""
    values = to_numpy(y)
    rows = values[None] if values.ndim == 1 else values
    x_values = to_numpy(x) if x is not None else np.arange(rows.shape[1])
    figure = go.Figure()
    for index, row in enumerate(rows):
        name = names[index] if names is not None else None
        figure.add_trace(go.Scatter(x=x_values, y=row, mode="lines", name=name))
    figure.update_layout(title=title, xaxis_title=x_title, yaxis_title=y_title, template=TEMPLATE,
                         showlegend=names is not None, **kwargs)
    if log_y:
        figure.update_yaxes(type="log")
    return figure


def scatter(
    x: Any,
    y: Any,
    *,
    title: str,
    x_title: str,
    y_title: str,
    color: Any = None,
    color_title: str = "",
    hover_name: Sequence[str] | None = None,
    **kwargs: Any,
) -> go.Figure:
    """Scatter plot of ``y`` against ``x``, optionally coloured and with hover labels."""
    figure = px.scatter(
        x=to_numpy(x), y=to_numpy(y), color=None if color is None else to_numpy(color),
        hover_name=hover_name, title=title, template=TEMPLATE,
        labels={"x": x_title, "y": y_title, "color": color_title}, **kwargs,
    )
    return figure
