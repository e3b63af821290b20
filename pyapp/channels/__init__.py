"""Channels: where agents and customers are reached outside the console (secrets, adapters)."""
