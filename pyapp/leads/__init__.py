"""Leads: contact details captured in conversations or added by agents, and their CSV export."""
