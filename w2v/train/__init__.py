"""Training: masking, quantizer targets, negatives, losses and the training loop."""
