"""BLIP (Li et al., ICML 2022): config, presets, models, forward adapters, converters, registry entries."""
