"""``python -m cli``: the ``koala`` command."""

from cli.main import main

raise SystemExit(main())
