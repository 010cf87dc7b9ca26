"""Networks, losses, training and the model registry. Backbones for embeddings live here too."""
