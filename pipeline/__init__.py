"""distill-pipeline: turn a large teacher LLM into a small student specialist."""
