"""The files capability: see capability.py (what it adds to a server) and tables.py."""
