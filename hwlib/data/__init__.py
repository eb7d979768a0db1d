"""Datasets: MNIST from offline-first sources, the resident batch iterator, and birds (CUB / SynthBirds)."""
from hwlib.data.mnist import MNISTSourceError, load_mnist, read_idx
from hwlib.data.resident import ResidentLoader

__all__ = ["MNISTSourceError", "ResidentLoader", "load_mnist", "read_idx"]
