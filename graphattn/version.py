"""The version of graphattn (one place: the package and pyproject.toml read it)."""
__version__ = "0.2.0"
