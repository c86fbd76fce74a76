"""``python -m netsec_tasks.cli``: the ``netsec`` command."""

import sys

from netsec_tasks.cli.app import main

sys.exit(main())
