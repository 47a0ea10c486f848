"""The `loragate` command line (the only part of loragate that prints).

- `main`          the typer app: serve, eval, adapters …
- `admin_client`  the admin API over HTTP, and the tables the CLI prints
- `remote`        what the release commands share: URL, arguments, exit codes, change lines
- `rollout`       `adapters canary` (bounds, steps) and `adapters shadow`
"""
