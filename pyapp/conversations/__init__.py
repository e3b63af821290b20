"""Conversations for agents: the inbox list, transcripts, every state change, limits and usage."""
