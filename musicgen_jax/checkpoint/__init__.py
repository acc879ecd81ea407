"""What every model's weights and every checkpoint format share, below the models: the error type,
checkpoint files (hub or local resolution, JSON, safetensors, torch pickles read to numpy), key maps from
checkpoint keys to parameter trees, and this project's own tree format."""
