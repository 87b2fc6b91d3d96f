"""The training loops: one per family (autoencoder.py, gan.py) on one resumable driver (loop.py)."""
