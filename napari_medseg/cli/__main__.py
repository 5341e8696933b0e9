"""``python -m napari_medseg.cli``."""

import sys

from .main import main

sys.exit(main())
