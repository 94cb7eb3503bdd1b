"""``python -m dklscope`` is the ``dklscope`` command."""

import sys

from .cli import main

sys.exit(main())
