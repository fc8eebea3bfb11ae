"""Build data, model, method and run directory for one task, and run it end to end."""
