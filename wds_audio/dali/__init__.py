"""The DALI back end: the same plan as the torch back end, decoded and featurized by DALI.

Enters: a LoaderConfig (and optional DaliFeatures); it imports pipeline/ for the catalog and
the plan, and pipeline/ never imports it. inputs.py turns the plan into DALI reader inputs,
features.py builds the feature stage, loader.py runs the pipeline. Leaves: DaliBatch objects
(a Batch plus features and frame counts), on the GPU when there is one.
"""
from .features import DaliFeatures, DaliGain, DaliNoise, DaliSpecAugment
from .loader import DaliBatch, DaliLoader

__all__ = ["DaliBatch", "DaliFeatures", "DaliGain", "DaliLoader", "DaliNoise", "DaliSpecAugment"]
