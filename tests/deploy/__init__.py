"""Tests of the image, Kubernetes, compose and observability files."""
