"""Errors say whether to retry.

`InvalidMessageError`: this message can never be applied; dead-letter it and move on.
`TransientError`: the database or the broker failed; retry the same batch after a pause.
`DeadLetterLimitError`: too many messages are being dead-lettered; stop rather than drain the
topic into its dead-letter topic.
"""

from __future__ import annotations


class InvalidMessageError(Exception):
    """The message cannot be applied, now or later: send it to the dead-letter topic."""


class TransientError(Exception):
    """A database or broker failure: the batch is retried with backoff."""


class DeadLetterLimitError(Exception):
    """The share of dead-lettered messages passed SLUICE_DLQ_MAX_RATIO: the consumer stops."""
