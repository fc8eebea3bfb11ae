"""The run directory: its layout, loading a trained run, chaining runs, named adapters."""
