"""Tiny, randomly initialised models built locally for tests (no network)."""
