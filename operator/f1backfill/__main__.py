"""`python -m f1backfill`: the `f1backfill` program."""

from .cli import console

console()
