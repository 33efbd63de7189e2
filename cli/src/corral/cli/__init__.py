"""The ``corral`` command: talks to a Corral deployment only through its public HTTP API."""
