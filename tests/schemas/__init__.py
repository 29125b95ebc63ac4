"""Tests of data shapes and the contracts made from them."""
