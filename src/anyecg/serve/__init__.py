"""Serving: the models behind an HTTP API (`anyecg serve`, see `app.py`)."""

from anyecg.serve.app import ServeLimits, create_app, run_server

__all__ = ["ServeLimits", "create_app", "run_server"]
