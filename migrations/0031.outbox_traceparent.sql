-- One trace from a request to the channel send (issue 14 §6): an outbox row keeps the W3C trace
-- context (traceparent) of the transaction that wrote it, so the drainer's send continues that
-- trace. NULL when traces are off. Its default (the transaction's app.traceparent setting, checked)
-- is set in sql/80_outbox_traces.sql.
-- depends: 0021.telegram_follow

ALTER TABLE parley.outbox ADD COLUMN traceparent text;
