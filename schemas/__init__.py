"""Every data shape sluice uses: wire envelopes, provider payloads, tables and topics."""
