"""Array-level algorithms: arrays in, arrays out. Nothing here imports anndata or scanpy."""
