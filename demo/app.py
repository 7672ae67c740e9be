"""The anygen chat demo: ``python demo/app.py [--pipeline NAME|PATH] [--host 127.0.0.1] [--port 7860] [--share]``.

The same as ``anygen demo``; the app itself is :mod:`anygen.demo.app`. Needs ``pip install -e '.[demo]'``.
"""

import sys

from anygen.demo_cli import main

if __name__ == "__main__":
    sys.exit(main())
