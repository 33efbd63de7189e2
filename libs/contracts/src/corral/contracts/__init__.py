"""Corral's message shapes: the public API models, the log records, the bus operations and names.

This package is the one source for every message shape; ``proto/`` holds the JSON Schema exported
from it (``make gen``).
"""
