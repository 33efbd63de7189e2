"""The HTTP routes, one module per resource; each turns a request into one session-store operation."""
