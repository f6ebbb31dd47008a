"""The error every labeler raises for an input it cannot label."""


class LabelError(ValueError):
    """An input could not be labeled (bad mask, solver did not converge); the message says why."""
