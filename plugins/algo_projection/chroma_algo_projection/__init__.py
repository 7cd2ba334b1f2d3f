"""A 2-D map of a space's embeddings, for the explorer."""
