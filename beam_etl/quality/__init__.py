"""Data quality: row-level checks, dataset-level checks and the quality report section."""
