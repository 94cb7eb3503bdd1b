"""``python -m dklscope`` is the ``dklscope`` command."""

import sys

from dklscope.cli import main

sys.exit(main())
