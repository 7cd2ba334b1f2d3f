"""A neighbour-preserving map of a space (UMAP) for the explorer."""
