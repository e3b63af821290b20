"""Realtime delivery: event source (LISTEN), frames, sinks (sockets, SSE) and the relay routing them."""
