"""Meta-learning for few-shot adaptation: an adapter initialisation learned across tasks."""
