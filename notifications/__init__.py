"""Notifications: Jinja2 templates per event and language, their renderer and channels."""
