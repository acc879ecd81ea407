"""The one error type of checkpoint loading and saving."""


class CheckpointError(ValueError):
    """A checkpoint that cannot be found, read, or does not match the model it is loaded into."""
