"""megabit: vision networks in one megabit."""
__version__ = "0.1.0"
