"""Chatbots: their configuration (branding, lead capture, handoff, allowed origins) and public keys."""
