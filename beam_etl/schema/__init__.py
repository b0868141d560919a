"""Typed schemas: the model, conversions (Arrow, JSON, Avro, SQL DDL), inference, conformance."""
