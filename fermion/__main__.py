"""`python -m fermion` is the `fermion` command."""

from fermion.cli import main

main()
