"""Small plotly helpers so that notebooks stay about the lesson, not the plotting.

Each helper takes tensors or arrays, labels its axes, and returns the figure (a notebook cell that
ends with the call shows it). Diverging data is centred on zero with a red-blue scale.

The course has one plotly template, ``"three_circuits"`` (:data:`TEMPLATE`): white background,
a top margin that holds a title of one or two lines (break a long one with ``<br>``), visible
shape lines, and 24 distinguishable line colours.
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
#: An unnamed heatmap axis (rows or columns numbered 0, 1, 2, ...) this short labels every index:
#: heads and vertices are counted one by one, and plotly would show only 0, 2, 4 or 0, 5.
MAX_NUMBERED_TICKS = 16


def _course_template() -> go.layout.Template:
    template = go.layout.Template(pio.templates["simple_white"])
    template.layout.update(
        # the title sits in the middle of a top margin tall enough for two lines. (plotly's title
        # automargin puts a title's first line against the figure's top edge, clipping it, and draws
        # the extra lines of a two-line title above the figure, where they are cut off)
        title={"automargin": False, "x": 0.02, "xanchor": "left", "font": {"size": 16}},
        margin={"t": 80, "l": 70, "r": 30, "b": 60},
        colorway=px.colors.qualitative.Dark24,
        font={"size": 12},
    )
    # simple_white draws shapes with zero-width lines, so a line added with add_shape, add_hline or
    # add_vline would be invisible; give them a visible width (areas keep their translucent fill)
    template.layout.shapedefaults.line.width = 1.5
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
    Named rows or columns (``x``, ``y``), up to :data:`MAX_LABELLED_TICKS` of them, are all labelled;
    unnamed ones are numbered one by one up to :data:`MAX_NUMBERED_TICKS` (never 0.5 or every other).
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
    for names, length, update in ((x, array.shape[-1], figure.update_xaxes), (y, array.shape[-2], figure.update_yaxes)):
        if names is not None and len(names) <= MAX_LABELLED_TICKS:
            update(tickmode="array", tickvals=list(names), ticktext=[str(name) for name in names])
        elif names is None and length <= MAX_NUMBERED_TICKS:
            update(tickmode="linear", tick0=0, dtick=1)
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
    if log_y:  # powers of ten (10⁻⁶), not SI prefixes (1µ), on a loss or probability axis
        figure.update_yaxes(type="log", exponentformat="power")
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


def token_attention(
    tokens: Sequence[str],
    patterns: Any,
    head_names: Sequence[str],
) -> Any:
    """circuitsvis's token-level attention view, self-contained so that it works offline.

    ``patterns[head, query, key]`` (a tensor or array, one ``[tokens, tokens]`` pattern per head) is
    drawn as one small pattern per head; hover over a head to zoom in, click to lock it. circuitsvis's
    own display fetches its JavaScript from unpkg.com whenever the *kernel* is online, so a browser
    without internet would show nothing; this returns the variant with the script embedded (about
    1.3 MB per view) as an ``IPython.display.HTML``, which needs no network anywhere.
    """
    import circuitsvis  # imported here: a second of start-up that only this view needs
    from IPython.display import HTML

    array = to_numpy(patterns)
    tokens, head_names = [str(token) for token in tokens], [str(name) for name in head_names]
    if array.ndim != 3 or array.shape[1:] != (len(tokens), len(tokens)) or array.shape[0] != len(head_names):
        raise ValueError(
            f"patterns must have shape [head, query, key] = [{len(head_names)}, {len(tokens)}, {len(tokens)}] "
            f"(one name per head, one label per token), got {array.shape}"
        )
    rendered = circuitsvis.attention.attention_heads(
        attention=array, tokens=tokens, attention_head_names=head_names,
    )
    return HTML(rendered.local_src)
