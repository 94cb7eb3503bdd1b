"""Nion Swift's STEMs as driver-protocol instruments, and Nion's simulator to try them on.

- `geometry`: overview pixels and Nion's normalised probe positions (no Nion needed);
- `backend`: `NionBackend`, the `Backend` over the instrumentation kit's STEM controller, scan
  and EELS camera, in a running Nion Swift (its plug-in, ``nionswift_plugin.dklscope_driver``)
  or in the kit's headless test harness;
- `usim`: ``nionswift-usim``, Nion's simulated STEM, hosted headless and served.

The Nion packages are GPL-3.0 and heavy, an optional extra (``pip install 'dklscope[nion]'``).
Importing this package or its modules imports none of them: only making a host or moving the
probe does. `dklscope.drivers` itself never imports this package.
"""
