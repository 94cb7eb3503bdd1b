"""``python -m dklscope.drivers.nion_swift``: serve Nion's simulated STEM headless (`usim.main`)."""

import sys

from .usim import main

sys.exit(main())
