"""The agents' live views of their tenant: the agent WebSocket and the SSE event stream."""
