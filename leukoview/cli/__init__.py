"""Floor 5, the command handlers behind ``python -m leukoview`` (the parser is leukoview/__main__.py)."""
