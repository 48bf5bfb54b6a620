"""The HTTP API (FastAPI): app factory, routes per resource, access control, problem details."""
