"""``python -m metasp``: see :func:`metasp._cli.main`."""

from ._cli import main

raise SystemExit(main())
