"""Adapters as releases: promotion through an eval gate, rollback, canaries, shadows, pins.

- `service`     `ReleaseService`: the admin operations over the store and the registry
- `channels`    what the channels mean for serving: warm pins, active versions
- `listing`     the admin listing of versions, validation, evals and residency
- `gate`        the promotion gate: candidate vs stable (or baseline) on one dataset
- `evaluation`  scoring a held-out set sent through the serving stack (`loragate eval`)
- `results`     what the release operations answer
- `checks`      output checks of a version's manifest (JSON schema, denied patterns and words)
- `outcomes`    per-version outcomes the gateway saw, over a sliding window (canary analysis)
- `canary`      canary analysis: bounds against the stable, and the next step (pure)
- `canary_controller`  the loop that acts on it: roll back, advance a step, promote
- `shadow_report`  shadow results scored and merged into the candidate's eval report
"""
