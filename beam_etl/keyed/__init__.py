"""Keyed machinery shared by sources, sinks and steps that need rows by key: bucketing of
batches by a key hash (`buckets`) and spilling buckets to local files so that a shuffle of
big data stays within memory (`spill`). Builds on `beam_etl.core` only.
"""
