"""`w2v probe`: layer-wise probing of embeddings (read, labels, probes, CKA, plots)."""
