"""The live view: a web page that follows a campaign, served by Bokeh from this process.

`serve` runs a Bokeh server (tornado) on one port; every browser that opens the page gets its
own document, filled from one shared `LiveCampaign` that a follower (`dklscope.live`) keeps
current. Each document looks for a change every `REFRESH_S` and streams only what is new
(`ColumnDataSource.stream`), so a page keeps up with thousands of measurements and the browser
redraws a few times a second at most, however fast the campaign measures.

Bokeh (``bokeh serve``'s server, embedded) was chosen because its server and its JavaScript,
BokehJS, ship inside the Python wheel: the page loads everything from this server, nothing from
the internet, and the plots (images with colour bars, streamed scatter and lines, linked
zoom) need no JavaScript written here.

The page shows: the overview with the measured points (coloured by order or by value, the
best starred, failed attempts as red crosses) and the next chosen point(s); the predicted mean
and standard deviation of the newest model; the last spectrum (and the best one) with the
scalarizer's window shaded; the scalar and the best so far against the measurement; decision
latency and instrument idle time; the state of the run and the budget left; the model chosen at
the newest refit, its stacking weights and the LOO calibration of its error bars, with a red
warning in words while that refit is flagged as miscalibrated. With a control
client it also has Pause, Resume and Stop buttons; without one (read-only) it has no controls
at all and accepts none.
"""

from __future__ import annotations

import html
import logging
import math
import signal
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from bokeh.application import Application
from bokeh.application.handlers.function import FunctionHandler
from bokeh.document import Document
from bokeh.layouts import column, row
from bokeh.models import (
    BoxAnnotation,
    Button,
    ColorBar,
    ColumnDataSource,
    Div,
    HoverTool,
    Legend,
    LegendItem,
    LinearColorMapper,
    RadioButtonGroup,
    Range1d,
    Title,
)
from bokeh.palettes import Greys256, Inferno256, Magma256, Viridis256
from bokeh.plotting import figure
from bokeh.server.server import Server
from bokeh.transform import factor_cmap

from .control import ControlClient, ControlError
from .live import LiveCampaign
from .report import idle_fraction

log = logging.getLogger(__name__)

# The hosts a page with controls may bind (IPv4: Bokeh's origin checks take no IPv6 address).
LOOPBACK = ("127.0.0.1", "localhost")

MAP_SIZE = 340  # pixels of the overview and map frames' longer side
# How often a page looks for news, by default. Each refresh costs the browser a redraw of the
# plots that changed: a headless Chromium drawing in software took about 0.27 s of CPU per
# refresh, so a page refreshed every second takes about a quarter of a core.
REFRESH_S = 1.0
PLOT_WIDTH, PLOT_HEIGHT = 440, 260

STATE_COLOURS = {
    "running": "#1a7f37",
    "pausing": "#9a6700",
    "paused": "#9a6700",
    "resuming": "#9a6700",
    "stopping": "#9a6700",
    "stopped": "#57606a",
    "error": "#cf222e",
    "waiting": "#57606a",
    "unknown": "#57606a",
}

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


def _legend(items: list[tuple[str, list[Any]]]) -> Legend:
    """A horizontal legend without a frame, for below a plot."""
    return Legend(items=[LegendItem(label=label, renderers=r) for label, r in items], **LEGEND)


def serve(
    live: LiveCampaign,
    *,
    host: str = "127.0.0.1",
    port: int = 5006,
    control: ControlClient | None = None,
    refresh_s: float = REFRESH_S,
    on_start: Any = None,
) -> None:
    """Serve the page for ``live`` at ``http://host:port/`` until interrupted (Ctrl-C).

    ``control``: send the buttons' requests with it; None: a read-only page. ``refresh_s``:
    how often each page looks for news. On loopback only
    pages from this machine's own addresses may connect their websocket; elsewhere any origin
    (read-only pages only: the command line refuses controls off loopback). ``on_start(url)``
    is called once the server listens.
    """
    executor = ThreadPoolExecutor(2, thread_name_prefix="dklscope-view-control")

    def make_document(doc: Document) -> None:
        _Page(doc, live, control, executor, refresh_s)

    loopback = host in LOOPBACK
    origins = [f"127.0.0.1:{port}", f"localhost:{port}"] if loopback else ["*"]
    server = Server(
        {"/": Application(FunctionHandler(make_document))},
        address=host,
        port=port,
        allow_websocket_origin=origins,
        num_procs=1,
    )
    server.start()
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, signal.default_int_handler)  # as Ctrl-C
    url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{server.port}/"
    log.info("live view of %s at %s (Ctrl-C stops)", live.title, url)
    if on_start is not None:
        on_start(url)
    try:
        server.io_loop.start()
    except KeyboardInterrupt:
        log.info("live view stopped")
    finally:
        server.stop()
        executor.shutdown(wait=False)
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _card(label: str, value: str, detail: str = "") -> str:
    """A card's HTML: a small capitalised label, a large value (HTML), a detail line."""
    return (
        '<div style="color:#57606a;font-size:12px;text-transform:uppercase;'
        f'letter-spacing:0.05em">{html.escape(label)}</div>'
        f'<div style="font-size:21px;font-weight:600;color:#1f2328">{value}</div>'
        f'<div style="{NOTE}">{detail or "&nbsp;"}</div>'
    )


def _badge(state: str) -> str:
    colour = STATE_COLOURS.get(state, "#57606a")
    return (
        f'<span style="background:{colour};color:white;border-radius:6px;padding:0 10px;'
        f'font-size:17px;letter-spacing:0.06em">{html.escape(state.upper())}</span>'
    )


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


def _seconds(value: float) -> str:
    """A duration for people: 75 ms, 1.2 s, 3 min 20 s."""
    if not math.isfinite(value):
        return "-"
    if value < 1:
        return f"{1000 * value:.0f} ms"
    if value < 60:
        return f"{value:.1f} s"
    return f"{int(value // 60)} min {value % 60:.0f} s"


def _number(value: float | None) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.4g}"


def _fraction(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


class _Page:
    """One browser's document: built once, then refreshed with what is new in ``live``."""

    def __init__(
        self,
        doc: Document,
        live: LiveCampaign,
        control: ControlClient | None,
        executor: ThreadPoolExecutor,
        refresh_s: float = REFRESH_S,
    ) -> None:
        self.doc, self.live, self.control, self.executor = doc, live, control, executor
        self.n_measurements = 0  # measurements streamed so far
        self.best_so_far = -math.inf
        self.prediction_decision: int | None = None
        self.has_overview = False
        self.version = -1
        self.message = ""  # the last control reply or error
        self._build()
        self.refresh()
        doc.add_periodic_callback(self.refresh, round(1000 * refresh_s))  # news in `live`
        doc.add_periodic_callback(
            lambda: self._held(self._header), 1000
        )  # clocks: time since the last activity

    def _held(self, update: Any) -> None:
        """Run ``update`` with the document's changes sent as one message, which the browser
        lays out and draws once (each change on its own costs a layout and a redraw)."""
        self.doc.hold("combine")
        try:
            update()
        finally:
            self.doc.unhold()

    # -- building -----------------------------------------------------------------------------

    def _build(self) -> None:
        live = self.live
        self.title = Div(text=self._title_html(live), name="title")
        self.cards = {
            # Fixed sizes: a new text then costs the browser no new layout of the page.
            name: Div(text=_card(name, "-"), styles=CARD_STYLE, name=name, width=250, height=96)
            for name in ("state", "budget", "best", "latency")
        }
        if self.control is not None:
            self.buttons = {
                "pause": Button(label="Pause", button_type="warning", name="pause", width=100),
                "resume": Button(label="Resume", button_type="success", name="resume", width=100),
                "stop": Button(
                    label="Stop after this measurement",
                    button_type="danger",
                    name="stop",
                    width=220,
                ),
            }
            for command, button in self.buttons.items():
                button.on_click(lambda command=command: self._send(command))
            self.control_note = Div(text="", name="control_note", width=440, height=40)
            controls: Any = column(row(*self.buttons.values()), self.control_note)
        else:
            self.buttons = {}
            controls = Div(
                text=f'<span style="{NOTE}">read-only view: no controls</span>',
                name="read_only",
            )
        # The newest model record: which model, its weights and LOO calibration; and, while
        # that record is flagged, a red warning that says what the flag means.
        self.model_card = Div(
            text=_card("model", "-", "no model records yet"),
            styles=CARD_STYLE,
            name="model",
            width=390,
            height=112,
        )
        self.model_warning = Div(
            text="", name="model_warning", visible=False, styles=WARNING_STYLE, width=1200
        )
        header = column(
            self.title,
            row(*self.cards.values(), self.model_card, controls),
            self.model_warning,
        )

        # -- the overview and the maps: linked ranges, image rows downwards as on screen
        self.x_range, self.y_range = Range1d(-0.5, 47.5), Range1d(47.5, -0.5)
        self.overview_source = ColumnDataSource(
            {"image": [], "x": [], "y": [], "dw": [], "dh": []}, name="overview"
        )
        self.measured = ColumnDataSource(
            {"x": [], "y": [], "seq": [], "scalar": [], "kind": []}, name="measured"
        )
        self.failed = ColumnDataSource({"x": [], "y": [], "seq": [], "error": []}, name="failed")
        self.next_points = ColumnDataSource({"x": [], "y": [], "number": []}, name="next")
        self.best_point = ColumnDataSource({"x": [], "y": [], "scalar": []}, name="best")
        self.overview_fig = self._image_figure("overview and measured points")
        self.overview_fig.image(
            "image",
            x="x",
            y="y",
            dw="dw",
            dh="dh",
            source=self.overview_source,
            color_mapper=LinearColorMapper(palette=Greys256),
        )
        # Viridis without its darkest quarter, so early points show on a dark overview.
        self.order_mapper = LinearColorMapper(palette=Viridis256[64:], low=0, high=1)
        self.value_mapper = LinearColorMapper(palette=Inferno256[40:], low=0, high=1)
        self.value_mapper.nan_color = "gray"
        self.points = self.overview_fig.scatter(
            "x",
            "y",
            source=self.measured,
            size=9,
            line_color="white",
            line_width=0.8,
            fill_color={"field": "seq", "transform": self.order_mapper},
        )
        failed = self.overview_fig.scatter(
            "x", "y", source=self.failed, marker="x", size=11, line_color="red", line_width=2
        )
        upcoming = self.overview_fig.scatter(
            "x",
            "y",
            source=self.next_points,
            marker="circle",
            size=20,
            fill_alpha=0,
            line_color="#00e5ff",
            line_width=3,
        )
        best = self.overview_fig.scatter(
            "x",
            "y",
            source=self.best_point,
            marker="star",
            size=22,
            fill_color="gold",
            line_color="black",
        )
        legend = _legend([("measured", [self.points]), ("next", [upcoming]), ("best", [best])])
        self.failed_item = LegendItem(label="failed", renderers=[failed], visible=False)
        legend.items.append(self.failed_item)
        self.overview_fig.add_layout(legend, "below")
        self.hover = HoverTool(
            renderers=[self.points],
            tooltips=[("seq", "@seq"), ("x, y", "@x, @y"), (live.scalar_name, "@scalar")],
        )
        self.overview_fig.add_tools(self.hover)
        self.points_bar = ColorBar(color_mapper=self.order_mapper, title="order (seq)", width=10)
        self.overview_fig.add_layout(self.points_bar, "right")
        self.colour_by = RadioButtonGroup(labels=["order", "value"], active=0, name="colour_by")
        self.colour_by.on_change("active", lambda attr, old, new: self._colour_points(new))

        self.maps = {}
        for name, title, palette in (
            ("mean", f"predicted mean of {live.scalar_name}", Magma256),
            ("std", "predicted standard deviation", Viridis256),
        ):
            fig = self._image_figure(title)
            source = ColumnDataSource(
                {"image": [], "x": [], "y": [], "dw": [], "dh": []}, name=name
            )
            mapper = LinearColorMapper(palette=palette, nan_color="white")
            fig.image("image", x="x", y="y", dw="dw", dh="dh", source=source, color_mapper=mapper)
            dots = fig.scatter("x", "y", source=self.measured, size=4, color="cyan", alpha=0.9)
            fig.add_layout(ColorBar(color_mapper=mapper, width=10), "right")
            subtitle = Title(text="no model yet", text_font_size="12px", text_color="#57606a")
            fig.add_layout(subtitle, "above")
            fig.add_layout(_legend([("measured", [dots])]), "below")
            self.maps[name] = (fig, source, mapper, subtitle)

        # -- the last spectrum, the best one, the scalarizer's window
        self.spectrum = ColumnDataSource({"axis": [], "value": []}, name="spectrum")
        self.best_spectrum = ColumnDataSource({"axis": [], "value": []}, name="best_spectrum")
        self.spectrum_fig = self._plot(
            "last spectrum",
            f"spectral axis ({live.axis_units})" if live.axis_units else "channel",
            live.spectrum_units or "signal",
        )
        best_line = self.spectrum_fig.line(
            "axis", "value", source=self.best_spectrum, color="#8c959f", line_dash="dashed"
        )
        last_line = self.spectrum_fig.line(
            "axis", "value", source=self.spectrum, color="#0550ae", line_width=1.6
        )
        self.window_box = BoxAnnotation(fill_color="orange", fill_alpha=0.2, visible=False)
        self.reference_box = BoxAnnotation(fill_color="gray", fill_alpha=0.12, visible=False)
        self.spectrum_fig.add_layout(self.window_box)
        self.spectrum_fig.add_layout(self.reference_box)
        window = _legend([("last", [last_line]), ("best so far", [best_line])])
        self.spectrum_fig.add_layout(window, "below")
        self.spectrum_subtitle = Title(text="", text_font_size="12px", text_color="#57606a")
        self.spectrum_fig.add_layout(self.spectrum_subtitle, "above")

        # -- the scalar and the best so far
        self.scalars = ColumnDataSource(
            {"seq": [], "scalar": [], "best": [], "kind": []}, name="scalars"
        )
        self.scalar_fig = self._plot(
            f"{live.scalar_name} and best so far", "measurement (seq)", live.scalar_name
        )
        colours = factor_cmap("kind", ["#bc4c00", "#0550ae"], ["seed", "policy"])
        dots = self.scalar_fig.scatter("seq", "scalar", source=self.scalars, color=colours, size=6)
        steps = self.scalar_fig.step(
            "seq", "best", source=self.scalars, mode="after", color="black", line_width=2
        )
        items = [  # one entry per kind (seed, policy), read in the browser as points stream in
            LegendItem(label={"field": "kind"}, renderers=[dots]),
            LegendItem(label="best so far", renderers=[steps]),
        ]
        self.scalar_fig.add_layout(Legend(items=items, **LEGEND), "below")

        # -- decision latency and instrument idle time
        self.timeline = ColumnDataSource({"seq": [], "latency": [], "idle": []}, name="timeline")
        self.timeline_fig = self._plot(
            "decision latency and instrument idle time", "measurement (seq)", "seconds"
        )
        bars = self.timeline_fig.vbar(
            x="seq", top="idle", width=0.8, source=self.timeline, color="#afb8c1"
        )
        line = self.timeline_fig.line("seq", "latency", source=self.timeline, color="#0550ae")
        marks = self.timeline_fig.scatter(
            "seq", "latency", source=self.timeline, color="#0550ae", size=4
        )
        self.timeline_fig.add_layout(
            _legend([("decision latency", [line, marks]), ("instrument idle before", [bars])]),
            "below",
        )
        self.timeline_fig.y_range.start = 0

        if live.source == "events":  # nothing to draw there: the events carry none of it
            for fig in (self.spectrum_fig, self.maps["mean"][0], self.maps["std"][0]):
                fig.visible = False
        self.note = Div(text="", name="note", width=1200, height=60)
        self.doc.title = f"dklscope · {live.title}"
        colour_by = row(Div(text=f'<span style="{NOTE}">colour points by</span>'), self.colour_by)
        self.doc.add_root(
            column(
                header,
                row(
                    column(self.overview_fig, colour_by),
                    self.maps["mean"][0],
                    self.maps["std"][0],
                ),
                row(self.spectrum_fig, self.scalar_fig, self.timeline_fig),
                self.note,
            )
        )

    @staticmethod
    def _title_html(live: LiveCampaign) -> str:
        return (
            f'<span style="font-family:{html.escape(FONT)};font-size:21px;font-weight:650">'
            f"dklscope live view · {html.escape(live.title)}</span>"
            f'<br><span style="{NOTE}">{html.escape(live.about)}</span>'
        )

    def _image_figure(self, title: str) -> Any:
        fig = figure(
            title=title,
            x_range=self.x_range,
            y_range=self.y_range,
            frame_width=MAP_SIZE,
            frame_height=MAP_SIZE,
            x_axis_label="x (px)",
            y_axis_label="y (px)",
            tools="pan,wheel_zoom,box_zoom,reset,save",
        )
        fig.grid.visible = False
        _style(fig)
        return fig

    def _plot(self, title: str, x_label: str, y_label: str) -> Any:
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

    def _colour_points(self, active: int) -> None:
        by_value = active == 1
        mapper = self.value_mapper if by_value else self.order_mapper
        self.points.glyph.fill_color = {
            "field": "scalar" if by_value else "seq",
            "transform": mapper,
        }
        self.points_bar.color_mapper = mapper
        self.points_bar.title = self.live.scalar_name if by_value else "order (seq)"

    # -- control ------------------------------------------------------------------------------

    def _send(self, command: str) -> None:
        """Send ``command`` from a worker thread (a reply may take a while), then show the
        outcome in this document."""
        assert self.control is not None
        address = self.live.control_address
        self._set_message(f"{command}: sent…")

        def send() -> None:
            try:
                reply = self.control.request(command, address=address)
                text = f"{command}: the controller is {reply['state']}"
            except ControlError as exc:
                text = f"{command}: {exc}"
            self.doc.add_next_tick_callback(lambda: self._set_message(text))

        self.executor.submit(send)

    def _set_message(self, text: str) -> None:
        self.message = text
        self.control_note.text = f'<span style="{NOTE}">{html.escape(text)}</span>'

    # -- refreshing ---------------------------------------------------------------------------

    def refresh(self) -> None:
        """Show what is new in ``live``, if anything."""
        self._held(self._refresh)

    def _refresh(self) -> None:
        live = self.live
        with live.lock:
            version = live.version
            new = live.measurements[self.n_measurements :]
            history = list(live.measurements)
            pending = live.pending()
            prediction = live.prediction
            overview = live.overview if not self.has_overview else None
        if version == self.version:
            return
        self.version = version
        if overview is not None:
            self._show_overview(overview)
        if new:
            self._stream(new, history)
        upcoming = [d.number for d in pending]
        if upcoming != self.next_points.data["number"]:  # unchanged: nothing to redraw
            self.next_points.data = {
                "x": [d.x for d in pending],
                "y": [d.y for d in pending],
                "number": upcoming,
            }
        if prediction is not None and prediction.decision != self.prediction_decision:
            self._show_prediction(prediction)
        self._header()

    def _show_overview(self, overview: np.ndarray) -> None:
        live = self.live
        rows, cols = overview.shape
        self.has_overview = True
        self.x_range.start, self.x_range.end = -0.5, cols - 0.5
        self.y_range.start, self.y_range.end = rows - 0.5, -0.5
        height = max(120, round(MAP_SIZE * rows / cols))
        for fig in (self.overview_fig, *(m[0] for m in self.maps.values())):
            fig.frame_height = height
        self.overview_source.data = {
            "image": [overview],
            "x": [-0.5],
            "y": [-0.5],
            "dw": [cols],
            "dh": [rows],
        }
        self._label(live)
        if live.window is not None:
            self.window_box.left, self.window_box.right = live.window
            self.window_box.visible = True
        if live.reference_window is not None:
            self.reference_box.left, self.reference_box.right = live.reference_window
            self.reference_box.visible = True

    def _label(self, live: LiveCampaign) -> None:
        """Titles and axis labels from the campaign's description (known with the overview)."""
        name = live.scalar_name
        self.title.text = self._title_html(live)
        self.spectrum_fig.xaxis.axis_label = f"spectral axis ({live.axis_units})"
        self.spectrum_fig.yaxis.axis_label = live.spectrum_units or "signal"
        self.scalar_fig.title.text = f"{name} and best so far"
        self.scalar_fig.yaxis.axis_label = name
        self.maps["mean"][0].title.text = f"predicted mean of {name}"
        self.hover.tooltips = [("seq", "@seq"), ("x, y", "@x, @y"), (name, "@scalar")]

    def _stream(self, new: list, history: list) -> None:
        live = self.live
        self.n_measurements += len(new)
        ok = [m for m in new if m.ok]
        bad = [m for m in new if not m.ok]
        if ok:
            self.measured.stream(
                {
                    "x": [m.x for m in ok],
                    "y": [m.y for m in ok],
                    "seq": [m.seq for m in ok],
                    "scalar": [m.scalar for m in ok],
                    "kind": [m.kind for m in ok],
                }
            )
        if bad:
            self.failed_item.visible = True
            self.failed.stream(
                {
                    "x": [m.x for m in bad],
                    "y": [m.y for m in bad],
                    "seq": [m.seq for m in bad],
                    "error": [m.error or "" for m in bad],
                }
            )
        scored = [m for m in history if m.ok and math.isfinite(m.scalar)]
        rows: dict[str, list] = {"seq": [], "scalar": [], "best": [], "kind": []}
        for m in ok:
            if math.isfinite(m.scalar):
                self.best_so_far = max(self.best_so_far, m.scalar)
                rows["seq"].append(m.seq)
                rows["scalar"].append(m.scalar)
                rows["best"].append(self.best_so_far)
                rows["kind"].append(m.kind)
        if rows["seq"]:
            self.scalars.stream(rows)
        self.timeline.stream(
            {
                "seq": [m.seq for m in new],
                "latency": [m.decision_latency_s for m in new],
                "idle": [math.nan if m.idle_s is None else m.idle_s for m in new],
            }
        )
        n = max(live.n_planned or 0, history[-1].seq + 1)
        if self.order_mapper.high < n - 1:  # the budget's range, changed only when exceeded
            self.order_mapper.high = n - 1
        if scored:
            values = [m.scalar for m in scored]
            self.value_mapper.low, self.value_mapper.high = min(values), max(values)
            best = max(scored, key=lambda m: m.scalar)
            self.best_point.data = {"x": [best.x], "y": [best.y], "scalar": [best.scalar]}
        self._show_spectra(history, scored)

    def _show_spectra(self, history: list, scored: list) -> None:
        live = self.live
        with_spectrum = [m for m in history if m.ok and len(m.spectrum)]
        if not with_spectrum:
            return
        last = with_spectrum[-1]
        axis = live.axis
        if axis is None or len(axis) != len(last.spectrum):
            axis = np.arange(len(last.spectrum), dtype=float)
        self.spectrum.data = {"axis": axis, "value": np.asarray(last.spectrum, dtype=float)}
        best = max((m for m in scored if len(m.spectrum)), key=lambda m: m.scalar, default=None)
        if best is not None and len(best.spectrum) == len(axis):
            self.best_spectrum.data = {"axis": axis, "value": np.asarray(best.spectrum, float)}
        self.spectrum_subtitle.text = (
            f"seq {last.seq} at (x={last.x:g}, y={last.y:g}) px: {live.scalar_name} "
            f"{_number(last.scalar)}"
            + (f"; window {live.window[0]:g}-{live.window[1]:g} shaded" if live.window else "")
        )

    def _show_prediction(self, prediction: Any) -> None:
        live = self.live
        assert live.grid_extent is not None
        left, right, bottom, top = live.grid_extent
        for name, values in (("mean", prediction.mean), ("std", prediction.std)):
            _, source, mapper, subtitle = self.maps[name]
            finite = values[np.isfinite(values)]
            if finite.size:
                mapper.low, mapper.high = float(finite.min()), float(finite.max())
            source.data = {
                "image": [values],
                "x": [left],
                "y": [top],
                "dw": [right - left],
                "dh": [bottom - top],
            }
            subtitle.text = (
                f"model of decision {prediction.decision}, fitted to "
                f"{prediction.n_train} measurements"
            )
        self.prediction_decision = prediction.decision

    def _show_model(self) -> None:
        """The model card and the warning, from the newest model record."""
        with self.live.lock:
            record = self.live.model
        if record is None:
            return
        weights = " · ".join(
            f"{html.escape(name)} {weight:.2f}"
            for name, weight in sorted(record.weights.items(), key=lambda item: -item[1])
        )
        calibration = (
            f"LOO coverage 50 % {_fraction(record.coverage50)} · 95 % "
            f"{_fraction(record.coverage95)} · z sd {_number(record.z_sd)}"
        )
        value = html.escape(record.chosen)
        if record.flag is not None:
            flag = html.escape(record.flag)
            value += f' <span style="color:#cf222e;font-size:15px">{flag}</span>'
        text = _card(
            f"model ({record.kind}) · decision {record.decision}",
            value,
            f"{weights}<br>{calibration}",
        )
        if text != self.model_card.text:
            self.model_card.text = text
        warning = record.warning()
        if self.model_warning.visible != (warning is not None):
            self.model_warning.visible = warning is not None
        if warning is not None:
            message = (
                f"&#9888; Miscalibrated model at decision {record.decision} ({record.flag}): "
                f"{html.escape(warning)}."
            )
            if message != self.model_warning.text:
                self.model_warning.text = message

    def _header(self) -> None:
        live = self.live
        with live.lock:
            state, reason, t_state = live.state, live.reason, live.t_state
            t_activity, controller = live.t_activity, live.controller
            history = list(live.measurements)
            budget, n_planned = live.budget_left, live.n_planned
            source, has_control = live.source, live.control_address is not None
        now = time.time()
        badge = _badge(state)
        details = []
        if reason:
            details.append(html.escape(reason))
        if state in ("running", "pausing") and t_activity is not None and now - t_activity > 10:
            details.append(f"nothing new for {_seconds(now - t_activity)}")
        if state in ("paused", "stopped", "error"):
            details.append(f"since {_seconds(now - t_state)}")
        if controller == "silent" and state not in ("stopped", "error"):
            details.append("the controller does not answer")
        self.cards["state"].text = _card("campaign", badge, " · ".join(details))

        finished = len({m.decision for m in history if m.status != "retried"})
        measured = sum(m.ok for m in history)
        if n_planned is not None:
            value = f"{finished} of {n_planned}"
        else:
            value = f"{finished}"
        detail = [f"{measured} measured"]
        if n_planned is not None and budget is not None:
            detail = [f"{budget['decisions']} left"]
            if budget.get("wall_s") is not None:
                detail.append(f"{_seconds(budget['wall_s'])} of wall time")
            if budget.get("dose_s") is not None:
                detail.append(f"{budget['dose_s']:.3g} s of dose")
        failed = sum(m.status == "failed" for m in history)
        if failed:
            detail.append(f"{failed} failed")
        self.cards["budget"].text = _card("measured points", value, " · ".join(detail))

        scored = [m for m in history if m.ok and math.isfinite(m.scalar)]
        if scored:
            best = max(scored, key=lambda m: m.scalar)
            self.cards["best"].text = _card(
                f"best {live.scalar_name}",
                _number(best.scalar),
                f"at (x={best.x:g}, y={best.y:g}) px · seq {best.seq}",
            )
        else:
            self.cards["best"].text = _card(f"best {live.scalar_name}", "-")

        latencies = [m.decision_latency_s for m in history if m.kind == "policy"]
        fraction = idle_fraction(history)
        idle = "-" if fraction is None else f"{100 * fraction:.1f}%"
        if latencies:
            self.cards["latency"].text = _card(
                "decision latency",
                _seconds(latencies[-1]),
                f"median {_seconds(statistics.median(latencies))} · instrument idle {idle}",
            )
        else:
            self.cards["latency"].text = _card(
                "decision latency", "-", f"seed points · instrument idle {idle}"
            )

        self._show_model()

        if self.buttons and state in ("stopped", "error") and self.message:
            self._set_message("")  # a reply to a request before the end says nothing now
        if self.buttons:
            self.buttons["pause"].disabled = not has_control or state not in ("running",)
            self.buttons["resume"].disabled = not has_control or state not in (
                "paused",
                "pausing",
            )
            self.buttons["stop"].disabled = not has_control or state in (
                "stopped",
                "error",
                "stopping",
                "waiting",
            )
        notes = []
        if source == "events":
            notes.append(
                "Following the progress events only (since this page's server connected): "
                "no overview, spectra, predicted maps or model records. Open the campaign's "
                "folder "
                "(dklscope view DIR) for those."
            )
        elif state == "waiting":
            notes.append(f"Waiting for a campaign to begin in {html.escape(live.title)}…")
        if self.buttons and not has_control and state not in ("stopped", "error", "waiting"):
            notes.append(
                "The buttons need the campaign's control socket: set runner.control in its "
                "config (with an events address, give --control)."
            )
        if live.prediction is None and source == "journal" and state != "waiting":
            notes.append("The predicted maps appear with the model's first checkpoint.")
        self.note.text = "".join(f'<p style="{NOTE}">{n}</p>' for n in notes)
