"""`tunelab ui`: a local web app to start, watch, compare and try runs (see docs/ui.md)."""
