"""Command-line interface: one module per verb; the library does the work."""
