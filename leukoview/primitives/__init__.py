"""Floor 0, primitives: pure functions and plain data that more than one job needs."""
