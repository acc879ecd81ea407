"""Applications over the library: the gradio demo (`demo`) and the blind listening page (`listen`)."""
