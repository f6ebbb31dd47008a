"""Reporting: from a run's ``rounds.csv`` to Table 1, the paired statistics, the hardness of the
picks and the figures. Reads what the run engine writes; never runs anything."""
