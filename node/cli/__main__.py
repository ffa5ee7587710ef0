"""``python -m node.cli``: the same as the ``tadpole`` console script."""

from node.cli import main

main()
