"""The live view's page: one browser's Bokeh document, laid out once and then kept current.

The page shows: the overview with the measured points (coloured by order or by value, the
best starred, failed attempts as red crosses) and the next chosen point(s); the predicted mean
and standard deviation of the newest model; the last spectrum (and the best one) with the
scalarizer's window shaded; the scalar and the best so far against the measurement; decision
latency and instrument idle time; the state of the run and the budget left; the model chosen at
the newest refit, its stacking weights and the LOO calibration of its error bars, with a red
warning in words while that refit is flagged as miscalibrated. With a control
client it also has Pause, Resume and Stop buttons; without one (read-only) it has no controls
at all and accepts none.

What it shows is computed from the `LiveCampaign` in `dklscope.observe.page_data`; its look
is `dklscope.observe.page_style`.
"""

from __future__ import annotations

import html
import math
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
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
from bokeh.transform import factor_cmap

from dklscope.campaign.control import ControlClient, ControlError

from .live import LiveCampaign, Prediction
from .page_data import (
    best_card,
    best_point_data,
    budget_card,
    card_html,
    failed_rows,
    latency_card,
    measured_rows,
    model_card,
    model_warning,
    next_points_data,
    notes_html,
    overview_data,
    prediction_data,
    scalar_rows,
    scored_measurements,
    spectra_data,
    state_card,
    timeline_rows,
    title_html,
)
from .page_style import (
    CARD_STYLE,
    LEGEND,
    MAP_SIZE,
    NOTE,
    WARNING_STYLE,
    map_figure,
    plot_figure,
    plot_legend,
)

# How often a page looks for news, by default. Each refresh costs the browser a redraw of the
# plots that changed: a headless Chromium drawing in software took about 0.27 s of CPU per
# refresh, so a page refreshed every second takes about a quarter of a core.
REFRESH_S = 1.0


class Page:
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
        self.title = Div(text=title_html(live), name="title")
        self.cards = {
            # Fixed sizes: a new text then costs the browser no new layout of the page.
            name: Div(text=card_html(name, "-"), styles=CARD_STYLE, name=name, width=250, height=96)
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
            text=card_html("model", "-", "no model records yet"),
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
        self.overview_fig = map_figure("overview and measured points", self.x_range, self.y_range)
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
        legend = plot_legend([("measured", [self.points]), ("next", [upcoming]), ("best", [best])])
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
            fig = map_figure(title, self.x_range, self.y_range)
            source = ColumnDataSource(
                {"image": [], "x": [], "y": [], "dw": [], "dh": []}, name=name
            )
            mapper = LinearColorMapper(palette=palette, nan_color="white")
            fig.image("image", x="x", y="y", dw="dw", dh="dh", source=source, color_mapper=mapper)
            dots = fig.scatter("x", "y", source=self.measured, size=4, color="cyan", alpha=0.9)
            fig.add_layout(ColorBar(color_mapper=mapper, width=10), "right")
            subtitle = Title(text="no model yet", text_font_size="12px", text_color="#57606a")
            fig.add_layout(subtitle, "above")
            fig.add_layout(plot_legend([("measured", [dots])]), "below")
            self.maps[name] = (fig, source, mapper, subtitle)

        # -- the last spectrum, the best one, the scalarizer's window
        self.spectrum = ColumnDataSource({"axis": [], "value": []}, name="spectrum")
        self.best_spectrum = ColumnDataSource({"axis": [], "value": []}, name="best_spectrum")
        self.spectrum_fig = plot_figure(
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
        window = plot_legend([("last", [last_line]), ("best so far", [best_line])])
        self.spectrum_fig.add_layout(window, "below")
        self.spectrum_subtitle = Title(text="", text_font_size="12px", text_color="#57606a")
        self.spectrum_fig.add_layout(self.spectrum_subtitle, "above")

        # -- the scalar and the best so far
        self.scalars = ColumnDataSource(
            {"seq": [], "scalar": [], "best": [], "kind": []}, name="scalars"
        )
        self.scalar_fig = plot_figure(
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
        self.timeline_fig = plot_figure(
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
            plot_legend([("decision latency", [line, marks]), ("instrument idle before", [bars])]),
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
        upcoming = next_points_data(pending)
        if upcoming["number"] != self.next_points.data["number"]:  # unchanged: nothing to redraw
            self.next_points.data = upcoming
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
        self.overview_source.data = overview_data(overview)
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
        self.title.text = title_html(live)
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
            self.measured.stream(measured_rows(ok))
        if bad:
            self.failed_item.visible = True
            self.failed.stream(failed_rows(bad))
        scored = scored_measurements(history)
        rows, self.best_so_far = scalar_rows(ok, self.best_so_far)
        if rows["seq"]:
            self.scalars.stream(rows)
        self.timeline.stream(timeline_rows(new))
        n = max(live.n_planned or 0, history[-1].seq + 1)
        if self.order_mapper.high < n - 1:  # the budget's range, changed only when exceeded
            self.order_mapper.high = n - 1
        if scored:
            values = [m.scalar for m in scored]
            self.value_mapper.low, self.value_mapper.high = min(values), max(values)
            self.best_point.data = best_point_data(scored)
        self._show_spectra(history, scored)

    def _show_spectra(self, history: list, scored: list) -> None:
        spectra = spectra_data(self.live, history, scored)
        if spectra is None:
            return
        spectrum, best_spectrum, subtitle = spectra
        self.spectrum.data = spectrum
        if best_spectrum is not None:
            self.best_spectrum.data = best_spectrum
        self.spectrum_subtitle.text = subtitle

    def _show_prediction(self, prediction: Prediction) -> None:
        for name, (image, limits, text) in prediction_data(self.live, prediction).items():
            _, source, mapper, subtitle = self.maps[name]
            if limits is not None:
                mapper.low, mapper.high = limits
            source.data = image
            subtitle.text = text
        self.prediction_decision = prediction.decision

    def _show_model(self) -> None:
        """The model card and the warning, from the newest model record."""
        with self.live.lock:
            record = self.live.model
        if record is None:
            return
        text = model_card(record)
        if text != self.model_card.text:
            self.model_card.text = text
        warning = model_warning(record)
        if self.model_warning.visible != (warning is not None):
            self.model_warning.visible = warning is not None
        if warning is not None and warning != self.model_warning.text:
            self.model_warning.text = warning

    def _header(self) -> None:
        live = self.live
        with live.lock:
            state, reason, t_state = live.state, live.reason, live.t_state
            t_activity, controller = live.t_activity, live.controller
            history = list(live.measurements)
            budget, n_planned = live.budget_left, live.n_planned
            source, has_control = live.source, live.control_address is not None
        now = time.time()
        self.cards["state"].text = state_card(state, reason, t_state, t_activity, controller, now)
        self.cards["budget"].text = budget_card(history, budget, n_planned)
        self.cards["best"].text = best_card(history, live.scalar_name)
        self.cards["latency"].text = latency_card(history)

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
        self.note.text = notes_html(live, state, source, has_control, bool(self.buttons))
