"""gg.nn: modules, layers and losses."""

from gpugrad.nn import functional, utils
from gpugrad.nn.modules import (
    MLP, ACTIVATIONS, Dropout, Embedding, Linear, Module, Parameter, Sequential, ToDevice, pipeline,
)
globals().update({cls.__name__: cls for cls in ACTIVATIONS.values()})  # ReLU, GELU, ...
from gpugrad.nn.rnn import GRU, LSTM, RNN
