"""SaveOS operator CLI."""

__version__ = "0.1.0"
