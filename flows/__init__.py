"""Prefect flows, stage functions, the DAG described once, and the `blip` command."""

import os


def ephemeral_prefect_defaults() -> None:
    """Settings for runs that start Prefect's temporary server (`make effect`, `python -m
    flows.bootstrap`). Prefect reads them once, at its import, so this package sets them on its own
    import, before any of its modules imports prefect; a user's own values win."""
    # its telemetry heartbeat races the server's first writes to its sqlite database ("database is
    # locked" at start) and cannot reach anything offline anyway
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # on a fresh 2-core machine its first start migrates a new database for longer than Prefect's
    # 20 s default: seed 1 of a study there was lost to "Timed out ... ephemeral Prefect API server"
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")


ephemeral_prefect_defaults()
