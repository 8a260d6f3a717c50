"""``python -m providers.demo``: the walkthrough (see :mod:`providers.demo.walkthrough`)."""

import sys

from providers.demo.walkthrough import main

sys.exit(main())
