"""Tests of the fakes of Square and Airtable."""
