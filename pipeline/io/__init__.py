"""Input and output files: readers for web archives and text datasets, and the Arrow shard writer."""
