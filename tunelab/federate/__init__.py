"""Federated fine-tuning with Flower: only adapter and head tensors travel between clients and server."""
