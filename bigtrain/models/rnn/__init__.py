"""The rnn family: stacked LSTM/GRU language models and row-wise sequence classifiers."""

from bigtrain.models.rnn.model import PRESETS, RNN, RNNConfig
from bigtrain.models.rnn.module import RNNModule

MODULES = [RNNModule]
CONFIGS = {RNNConfig: PRESETS}

__all__ = ["CONFIGS", "MODULES", "PRESETS", "RNN", "RNNConfig", "RNNModule"]
