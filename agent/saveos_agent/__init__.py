"""saveos-agent: the SaveOS host agent (standard library only, Python >= 3.9)."""

__version__ = "0.1.0"
