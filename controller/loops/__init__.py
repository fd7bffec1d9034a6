"""Leader-only loops (and the leadership they run under)."""
