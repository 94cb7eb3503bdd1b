"""How the live view's page looks: its font, the styles of its cards, notes and warning, the
sizes of its plots, and the figures and legends they are drawn in."""

from __future__ import annotations

from typing import Any

from bokeh.models import Legend, LegendItem, Range1d
from bokeh.plotting import figure

MAP_SIZE = 340  # pixels of the overview and map frames' longer side
PLOT_WIDTH, PLOT_HEIGHT = 440, 260

FONT = 'system-ui, -apple-system, "Segoe UI", "DejaVu Sans", sans-serif'
CARD_STYLE = {
    "border": "1px solid #d0d7de",
    "border-radius": "8px",
    "padding": "6px 14px",
    "background": "#f6f8fa",
    "min-width": "190px",
    "line-height": "1.35",
    "font-family": FONT,
    "margin-right": "10px",
}
NOTE = "color:#57606a;font-size:13px"
WARNING_STYLE = {
    "background": "#ffebe9",
    "border": "2px solid #cf222e",
    "border-radius": "8px",
    "padding": "6px 14px",
    "color": "#a40e26",
    "font-family": FONT,
    "font-size": "15px",
    "font-weight": "600",
}
LEGEND = {
    "orientation": "horizontal",
    "label_text_font_size": "12px",
    "border_line_color": None,
    "margin": 0,
    "padding": 4,
}


def plot_legend(items: list[tuple[str, list[Any]]]) -> Legend:
    """A horizontal legend without a frame, for below a plot."""
    return Legend(items=[LegendItem(label=label, renderers=r) for label, r in items], **LEGEND)


def _style(fig: Any) -> None:
    """Readable titles and labels, a toolbar that shows itself on hover."""
    fig.title.text_font_size = "14px"
    fig.title.text_font = FONT
    fig.toolbar.autohide = True
    fig.toolbar.logo = None
    for axis in (*fig.xaxis, *fig.yaxis):
        axis.axis_label_text_font_size = "13px"
        axis.axis_label_text_font_style = "normal"
        axis.major_label_text_font_size = "12px"


def map_figure(title: str, x_range: Range1d, y_range: Range1d) -> Any:
    """A figure for an image of the sample, in pixels, on the page's shared (linked) ranges."""
    fig = figure(
        title=title,
        x_range=x_range,
        y_range=y_range,
        frame_width=MAP_SIZE,
        frame_height=MAP_SIZE,
        x_axis_label="x (px)",
        y_axis_label="y (px)",
        tools="pan,wheel_zoom,box_zoom,reset,save",
    )
    fig.grid.visible = False
    _style(fig)
    return fig


def plot_figure(title: str, x_label: str, y_label: str) -> Any:
    """A figure for a plot against the measurement or the spectral axis."""
    fig = figure(
        title=title,
        frame_width=PLOT_WIDTH,
        frame_height=PLOT_HEIGHT,
        x_axis_label=x_label,
        y_axis_label=y_label,
        tools="pan,wheel_zoom,box_zoom,reset,save",
    )
    _style(fig)
    return fig
