"""Training: the LoRA step (per-example losses) and the batch source feeding it."""
