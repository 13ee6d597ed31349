"""nn: a neural-network library in NumPy whose every backward pass can be read and checked.

    model = nn.Sequential(nn.Linear(367500, 512, input_grad=False), nn.ReLU(), ...,
                          nn.Linear(64, 25), nn.Sigmoid())
    loss_fn = nn.BCELoss()
    opt = nn.SGD(model.parameters(), lr=0.05)
    loss = loss_fn(model(x), y)
    model.backward(loss_fn.backward())
    opt.step(); opt.zero_grad()
"""

from .gradcheck import gradcheck
from .layers import Linear, Module, Parameter, ReLU, Sequential, Sigmoid, sigmoid
from .losses import BCELoss, BCEWithLogitsLoss
from .optim import SGD, Adam

__all__ = ["Module", "Parameter", "Linear", "ReLU", "Sigmoid", "Sequential", "sigmoid",
           "BCELoss", "BCEWithLogitsLoss", "SGD", "Adam", "gradcheck"]

from .conv import Conv2d, Dropout, Flatten, GlobalAvgPool2d, MaxPool2d, Unflatten

__all__ += ["Conv2d", "MaxPool2d", "GlobalAvgPool2d", "Flatten", "Unflatten", "Dropout"]
