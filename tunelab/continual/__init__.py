"""Continual fine-tuning: train stage after stage, score every stage after each, and measure
what the later stages made the model forget (`tunelab continual CONFIG`)."""
