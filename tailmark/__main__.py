import sys

from tailmark.cli import main

sys.exit(main())
