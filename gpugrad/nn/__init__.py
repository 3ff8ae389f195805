"""gg.nn: modules, layers and losses."""

from gpugrad.nn import functional, utils
from gpugrad.nn.modules import (
    ELU, GELU, MLP, ACTIVATIONS, Dropout, Embedding, LeakyReLU, Linear, Module, Parameter, ReLU,
    Sequential, SiLU, Sigmoid, Softplus, Tanh,
)
from gpugrad.nn.rnn import GRU, LSTM, RNN
