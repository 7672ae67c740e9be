"""``python -m anygen.train ...`` and ``accelerate launch -m anygen.train ...`` (same options as ``anygen train``)."""

import sys

from anygen.train.cli import main

sys.exit(main())
