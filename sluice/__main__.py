"""`python -m sluice`: the same as the `sluice` command."""

from commands.main import main

main()
