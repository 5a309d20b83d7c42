"""The HTTP API (FastAPI): rider endpoints now, ops and finance later."""
