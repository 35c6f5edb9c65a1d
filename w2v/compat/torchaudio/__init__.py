"""torchaudio's wav2vec2 names (``models``, ``pipelines``) on w2v's modules."""
