"""Adapters as releases: promotion through an eval gate, rollback, canaries, pins.

- `service`     `ReleaseService`: the admin operations over the store and the registry
- `channels`    what the channels mean for serving: warm pins, active versions
- `listing`     the admin listing of versions, validation, evals and residency
- `gate`        the promotion gate: candidate vs stable (or baseline) on one dataset
- `evaluation`  scoring a held-out set sent through the serving stack (`loragate eval`)
"""
