"""Data sources (synthetic cohort, CSV files) and the in-memory LightningDataModule."""
