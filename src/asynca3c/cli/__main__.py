"""``python -m asynca3c.cli``: the same as the ``asynca3c`` command."""

from asynca3c.cli import main

raise SystemExit(main())
