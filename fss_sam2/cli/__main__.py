"""`python -m fss_sam2.cli ...` (e.g. under torchrun) is `fss-sam2 ...`."""
import sys

from . import main

sys.exit(main())
