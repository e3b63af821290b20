"""Realtime tests: a tenant with a chatbot (`support.realtime.tenant`) and the placeholder bot."""
from support.realtime import clients, placeholder_bot, tenant  # noqa: F401 (fixtures)
