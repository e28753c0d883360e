"""Model presets that load real weights offline (see dissect.models.registry.PRESETS)."""
