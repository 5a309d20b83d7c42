"""The operators' web console: server-rendered pages under /console (jinja2, htmx, Server-Sent Events),
signed in with an account's API token and scoped by the same code as the API."""
