"""The web console: see capability.py."""
