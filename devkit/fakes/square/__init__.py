"""A fake Square API: a Starlette app the squareup SDK talks to unchanged.

It keeps bookings and customers in memory and speaks Square's wire format:
- ListBookings (`GET /v2/bookings` with `start_at_min`, `start_at_max`, `limit`, `cursor`,
  `location_id`, `customer_id`; a window over 31 days is refused with 400), RetrieveBooking;
- RetrieveCustomer, ListCustomers, BulkRetrieveCustomers, SearchCustomers
  (`POST /v2/customers/search`, in `customer_search`);
- RetrieveMerchant;
- the Events API: SearchEvents (`POST /v2/events`, in `event_search`),
  EnableEvents and DisableEvents (`PUT /v2/events/enable|disable`), ListEventTypes
  (`GET /v2/events/types`).
Lists answer `{"bookings": [...], "cursor": "..."}` with the cursor left out on the last page;
errors answer `{"errors": [{"category", "code", "detail", "field"?}]}` with Square's codes.

Every change made through the Python API (`add_booking`, `update_booking`, `add_customer`,
`update_customer`, `delete_customer`) bumps `version` and `updated_at` as Square does and appends
a Square event, in the webhook envelope (devkit/square_envelope.py), to `events`. Each takes
`at=` to date the change; `clock` is the fake's "now" for changes without `at` and for the
28-day horizon of SearchEvents. As on Square, event search starts disabled (`search_enabled`):
events made while it is off are never searchable.

Events made elsewhere (`sluice simulate square`, the chaos run) are taken as Square's truth
through `record_event`, served to development tools as `POST /_fake/events` (no token, no
injected faults): the object becomes the booking or customer as it now is, and the event joins
the log with its own `event_id` and `created_at`, through the same append as the changes above.

For tests it records every request and can answer 429 or 5xx on demand (`fail_next`), through
the fault injection it shares with the fake Airtable (devkit/fakes/faults.py).
"""

from devkit.fakes.square.http import API_VERSION, FakeSquare

__all__ = ["API_VERSION", "FakeSquare"]
