"""Data sources (synthetic cohort, CSV files) and the in-memory LightningDataModule."""

from dropout_risk.data.base import DataError, TabularData

__all__ = ["DataError", "TabularData"]
