"""The live view: a web page that follows a campaign, served by Bokeh from this process.

`serve` runs a Bokeh server (tornado) on one port; every browser that opens the page gets its
own document (`dklscope.observe.page`), filled from one shared `LiveCampaign` that a follower
(`dklscope.observe.live`) keeps current. Each document looks for a change every `REFRESH_S` and
streams only what is new (`ColumnDataSource.stream`), so a page keeps up with thousands of
measurements and the browser redraws a few times a second at most, however fast the campaign
measures.

Bokeh (``bokeh serve``'s server, embedded) was chosen because its server and its JavaScript,
BokehJS, ship inside the Python wheel: the page loads everything from this server, nothing from
the internet, and the plots (images with colour bars, streamed scatter and lines, linked
zoom) need no JavaScript written here.
"""

from __future__ import annotations

import logging
import signal
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from bokeh.application import Application
from bokeh.application.handlers.function import FunctionHandler
from bokeh.document import Document
from bokeh.server.server import Server

from dklscope.campaign.control import ControlClient

from .live import LiveCampaign
from .page import REFRESH_S, Page

log = logging.getLogger(__name__)

# The hosts a page with controls may bind (IPv4: Bokeh's origin checks take no IPv6 address).
LOOPBACK = ("127.0.0.1", "localhost")


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
        Page(doc, live, control, executor, refresh_s)

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
