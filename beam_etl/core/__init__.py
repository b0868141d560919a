"""The bottom layer: what every other part of beam_etl builds on, and nothing above it.

- `errors`: the one exception tree (exit codes, pickle-safe); `config`: secrets and DSNs.
- `batches`, `datatypes`, `coders`: Arrow record batches between steps, spec type names, the
  batch coder.
- `casting`, `expr`: Beam-free column casting and the expression language.
- `outputs` (`WithErrors`) and `deadletter`: the dead-letter record, its one catalogue of
  reason codes, and the tagged outputs every step returns.
- `metrics`: per-step counters and the progress tally workers send to the launcher.
- `publish`: the pending-publish protocol (the verdict first, then every sink), run-scoped
  file removal; `state`: the state store of incremental sources; `retries`: retry policies.
- `local`: whether a pipeline runs on this machine; `graph`: walking a plan's nodes;
  `changes`: the columns of every change event.

Modules here import Beam, Arrow and the standard library, never another beam_etl package
(`tests/test_layout.py` checks it).
"""
