import sys

from cdm_bench.cli import main

sys.exit(main())
