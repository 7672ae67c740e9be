import sys

from anygen.cli import main

sys.exit(main())
