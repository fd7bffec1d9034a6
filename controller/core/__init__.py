"""Pure rules: records, names, sizes, input validation, the scheduler plan.

Imports nothing of the controller outside this package (checked by scripts/check_layers.py).
"""
