"""``python -m dpct``: the same as the ``dpct`` command."""

from dpct.cli import main

main()
