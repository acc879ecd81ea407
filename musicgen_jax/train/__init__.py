"""Training the LM: the loss (`loss.py`) over the delay-pattern sequence of token crops."""
