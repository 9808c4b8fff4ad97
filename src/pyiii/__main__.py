import sys

from pyiii.cli import main

sys.exit(main())
