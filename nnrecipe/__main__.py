"""`python -m nnrecipe ...` (and `torchrun ... -m nnrecipe ...`): the command line."""

from nnrecipe.cli import main

main()
