"""The `sluice` command: the Typer app every component is started from, its one settings loader,
and the contracts exporter."""
