"""`python -m b2bdwh` is the same as the `b2bdwh` console script."""

from b2bdwh.cli import main

raise SystemExit(main())
