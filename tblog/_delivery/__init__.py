"""From NDJSON lines to rows in Tinybird: the bounded buffer, batches per datasource, the one
sender thread, HTTP, retries, rate limits, the circuit breaker, the spool, exit and fork."""
