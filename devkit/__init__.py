"""The development kit: `sluice dev` and the embedded services it runs, the fake Square and
Airtable APIs, and the signed test deliveries of `sluice simulate`. Nothing deployed runs it."""
