"""Everything MLflow: the store, runs, provenance, bulk reads, and the names both sides rely on."""
