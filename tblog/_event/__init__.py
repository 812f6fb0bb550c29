"""From a logging call (or a row) to one NDJSON line: the snapshot taken on the caller's
thread, the event built from it on the sender thread, its JSON that never fails, redaction."""
