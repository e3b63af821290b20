"""Customer webhooks (Standard Webhooks): signing, the HTTP sender the outbox drainer uses, endpoints API."""
