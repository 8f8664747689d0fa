"""Hardware-aware, data-free pruning (Taylor on gates + eta x LUT latency). Planned: issue 6."""
