"""Beam-native interop: schema'd rows in and out of beam_etl, and a Beam YAML provider."""

from beam_etl.interop.bridge import ToBatches, ToRows

__all__ = ["ToBatches", "ToRows"]
