"""Model presets that load real weights offline (see dissect.models.PRESETS)."""
