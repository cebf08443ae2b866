"""Errors an expert raises; callers (the router) catch ``ExpertError`` to fall back."""

from __future__ import annotations


class ExpertError(RuntimeError):
    """An expert could not answer; the message says why and what to change."""


class ExpertUnavailable(ExpertError):
    """The engine or server cannot be reached (after the configured retries)."""
