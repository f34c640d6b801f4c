"""``python -m ray_realtime.local``: run the offline local model server."""

import sys

from .server import main

sys.exit(main())
