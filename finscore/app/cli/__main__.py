"""``python -m finscore.app.cli``: the ``finscore`` console."""

from finscore.app.cli.group import main

main()
