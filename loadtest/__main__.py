"""`python -m loadtest`: the same commands as `loragate loadtest`."""

from server.cli.loadtest import app

app(prog_name="python -m loadtest")
