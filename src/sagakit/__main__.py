"""``python -m sagakit``: the same as the ``sagakit`` command."""

from sagakit.cli import main

main()
