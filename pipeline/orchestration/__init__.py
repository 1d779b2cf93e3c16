"""What `distill run` needs beyond the stages: a task lock, fingerprints, drift, retention."""
