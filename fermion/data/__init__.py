"""Datasets: immutable, content-addressed versions of tables and labelled image sets (`fermion data`)."""

from __future__ import annotations

from fermion.data.ingest import SAMPLES, SUPPORTED, DatasetError
from fermion.data.store import DatasetStore, DatasetVersion, sanitize_name

__all__ = ["SAMPLES", "SUPPORTED", "DatasetError", "DatasetStore", "DatasetVersion", "sanitize_name"]
