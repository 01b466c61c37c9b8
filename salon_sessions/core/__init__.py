"""Contracts shared by every component: company id, phone/JID, events, settings."""
