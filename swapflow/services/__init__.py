"""What the API, the CLI and the worker call to start and drive the flows: one module per flow, named as
the flow's workflow is."""
