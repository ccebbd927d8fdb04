"""``python -m client``: the ``sealpost`` command."""

from .cli import main

raise SystemExit(main())
