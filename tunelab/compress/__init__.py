"""Compression beyond export: structured pruning by measured importance."""
