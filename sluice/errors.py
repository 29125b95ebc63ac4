"""Errors say whether to retry: every error sluice raises derives from one of these two.

`TransientError`: an outage (the database, the broker or a provider unreachable, overloaded or
too slow). The same call may well succeed later: retry it with backoff, keep the work.
`InvalidInputError`: this input will never succeed as it is (a message that cannot be decoded,
a value the database refuses, a record a provider answers 4xx for). Retrying cannot help:
dead-letter it, refuse it, or report it, and go on with the rest.

So "retry or give up on this one" is a single `isinstance` wherever it is decided. An error that
is neither is a bug in sluice, and is treated as one (see consumers/runtime.py). Driver errors
(psycopg, aiokafka, httpx, requests) become ours where sluice calls the driver.
"""

from __future__ import annotations


class TransientError(Exception):
    """An outage: retry later, with backoff."""


class InvalidInputError(Exception):
    """This input will never succeed: dead-letter it or refuse it, never retry it."""
