"""Tests of the `sluice` command."""
