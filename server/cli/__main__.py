from server.cli.main import app

app()
