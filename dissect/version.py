"""The package version (one place: pyproject reads it, run.json records it)."""

__version__ = "0.1.0"
