"""Side-by-side comparison of tracked runs: selection, bulk fetch, grid, curves, table."""
