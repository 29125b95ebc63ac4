"""Tests of the reconcilers, replay, dead-letter redrive and the admin trigger."""
