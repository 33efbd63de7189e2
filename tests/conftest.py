"""Shared test set-up. Unit and contract tests need nothing; integration and e2e tests start their
own NATS, Postgres, OpenBao, embedded model and Corral services on free ports (see tests/e2e)."""
