import sys

from utils.report.summary import main

sys.exit(main())
