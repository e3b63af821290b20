"""Everything a visitor's browser talks to: sessions, conversation tokens, the visitor socket, the script."""
