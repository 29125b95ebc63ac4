"""The consumer's own errors, on the platform's two kinds (sluice/errors.py).

`InvalidMessageError` (an `InvalidInputError`): this message can never be applied; dead-letter
it and move on. For "retry the batch after a pause", a projection raises (or lets through) any
`TransientError`: the database's, the broker's and the providers' errors already are.
`DeadLetterLimitError`: too many messages are being dead-lettered; stop rather than drain the
topic into its dead-letter topic.
"""

from __future__ import annotations

from sluice.errors import InvalidInputError


class InvalidMessageError(InvalidInputError):
    """The message cannot be applied, now or later: send it to the dead-letter topic."""


class DeadLetterLimitError(Exception):
    """The share of dead-lettered messages passed SLUICE_DLQ_MAX_RATIO: the consumer stops."""
