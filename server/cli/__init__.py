"""The `loragate` command line (the only part of loragate that prints).

- `main`          the typer app: serve, eval, adapters …
- `admin_client`  the admin API over HTTP
- `tables`        the tables the CLI prints (80 columns; --wide)
- `loadtest`      `loragate loadtest` (the tool itself is the `loadtest` package)
- `remote`        what the release commands share: URL, arguments, exit codes, change lines
- `rollout`       `adapters canary` (bounds, steps) and `adapters shadow`
"""
