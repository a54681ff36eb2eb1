import sys

from utils.report.cli import main

sys.exit(main())
