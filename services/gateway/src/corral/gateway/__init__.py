"""Corral's public HTTP API: the Managed Agents beta endpoints, wire-compatible with the ``anthropic`` SDK.

The gateway holds no state. Each request is authenticated, validated against the
``corral.contracts.api`` params models and forwarded to the session-store over the bus; the session
event stream is a live follow of the session's log subject.
"""
