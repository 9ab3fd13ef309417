-- The console's per-endpoint success rate and latency read the attempts of the last hour and the
-- last day; without this index each page view would read every attempt ever recorded.
create index delivery_attempts_started on delivery_attempts (started_at);
