"""BLIP-2 (Li et al., ICML 2023): a Querying Transformer between a frozen image tower and a frozen language model."""
