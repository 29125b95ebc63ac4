"""Tests of the App API."""
