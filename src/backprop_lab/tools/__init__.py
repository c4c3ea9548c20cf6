"""The tools beside training: predict, explain (the chain rule by hand), search, sweep summaries."""
