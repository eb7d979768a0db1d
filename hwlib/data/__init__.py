"""Datasets: MNIST from offline-first sources, the resident batch iterator, and birds (CUB / SynthBirds)."""
from hwlib.data.cub import BirdSplit, CUBFormatError, load_pickle, open_birds
from hwlib.data.mnist import MNISTSourceError, load_mnist, read_idx
from hwlib.data.resident import ResidentLoader
from hwlib.data.synthbirds import SynthBirdsError, make_synthbirds

__all__ = ["BirdSplit", "CUBFormatError", "MNISTSourceError", "ResidentLoader", "SynthBirdsError", "load_mnist",
           "load_pickle", "make_synthbirds", "open_birds", "read_idx"]
