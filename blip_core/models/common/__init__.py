"""What every model family shares: towers, their configs, tokenizer, decoding, packing, vision start."""
