"""The outbox: delivery types and the sender registry the drainer uses, the delivery log and replay API."""
