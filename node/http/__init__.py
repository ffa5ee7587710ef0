"""The node's HTTP face: the state API, change streams, OpenAPI, metrics (see app.py)."""
