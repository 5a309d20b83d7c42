"""The HTTP API (FastAPI): riders', finance's and ops' endpoints, one router per area under `routers/`."""
