"""One garbage-collector habit for every long-running sluice process.

Once a service has imported its modules and built its clients, those objects live as long as the
process. Left in the collector's oldest generation, every full collection walks them all again,
and on a hot path (a consumer batch, a burst of deliveries) full collections come often: they
showed up as a tenth of a consumer's CPU time, charged to whatever line happened to allocate.
`freeze_startup_objects()` moves them out of the collector's sight; later garbage is collected
as usual.
"""

from __future__ import annotations

import gc


def freeze_startup_objects() -> None:
    gc.collect()
    gc.freeze()
