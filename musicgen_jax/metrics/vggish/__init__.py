"""VGGish (Hershey et al. 2017), the embedding network of the Frechet Audio Distance: model.py (the log-mel
front end and the VGG network), weights.py (torchvggish's released checkpoints)."""
