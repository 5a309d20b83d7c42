"""Wire protocols spoken with cabinets."""
