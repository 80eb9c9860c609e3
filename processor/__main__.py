"""``python -m processor`` is the same as the ``hl7-processor`` command."""

from processor.cli import main

raise SystemExit(main())
