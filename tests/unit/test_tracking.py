"""Redaction of what reaches the tracking store."""

from __future__ import annotations


def test_redaction_survives_a_variable_deleted_while_the_environment_is_read(monkeypatch):
    """MLflow's telemetry thread deletes a variable at any time; reading the names first and each value
    with .get leaves a deleted one out instead of raising KeyError (it once failed a cached make run)."""
    import os

    from blip_core import tracking

    monkeypatch.setenv("MY_API_TOKEN", "abcdefgh12345")
    real_get = os.environ.get

    def get_deleting(name, default=None):
        if name == "MY_API_TOKEN":
            os.environ.pop("GONE_SOON", None)
        return real_get(name, default)

    monkeypatch.setenv("GONE_SOON", "x")
    monkeypatch.setattr(os.environ, "get", get_deleting)
    assert tracking.redact("token abcdefgh12345 here") == "token [redacted] here"
