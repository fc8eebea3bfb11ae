"""tunelab serve: an OpenAI-compatible server, many LoRA adapters on one base model."""
