"""Numbered schema migrations, applied at start-up, for the warehouse (the registry's are in
registry.py)."""
