"""Build, packaging and maintenance scripts (run as files or with python -m scripts.X)."""
