"""Chapter 01's automatic differentiation from scratch, for the chapters and appendices that use it.

Chapter 01 writes every piece here in full, in the notebook, and asserts that its own classes agree
with these; its appendix imports them from here. Everything works on Python floats (``Dual``,
``Value``) or on small float64 tensors (the dense layer and the multilayer perceptron).

* ``Dual``: forward mode, a number that carries its derivative (value + tangent * epsilon);
* ``Value`` and ``topological_order``: reverse mode, a recorded graph walked backwards;
* ``dense_forward`` / ``dense_backward``: a dense layer's forward pass and its two backward circuits;
* ``make_spirals``, ``init_mlp``, ``mlp_forward``, ``mlp_backward``, ``train_mlp``: a small network trained
  with that backward pass.
"""
import math

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from . import display

DTYPE = torch.float64  # chapter 01 checks agreement to 1e-10, which needs double precision


def stable_sigmoid(v):
    # 1 / (1 + e^-v) overflows for very negative v; this form never does.
    if v >= 0:
        return 1.0 / (1.0 + math.exp(-v))
    return math.exp(v) / (1.0 + math.exp(v))


class Dual:
    # A number that carries its derivative along: value + tangent * epsilon, with epsilon ** 2 = 0.
    created = 0

    def __init__(self, value, tangent=0.0):
        self.value = float(value)
        self.tangent = float(tangent)
        Dual.created += 1

    def __repr__(self):
        return f"Dual(value={self.value:.6g}, tangent={self.tangent:.6g})"

    @staticmethod
    def lift(other, operation):
        # A plain number is a constant: its tangent is 0. Anything else is refused with a clear message.
        if isinstance(other, Dual):
            return other
        if isinstance(other, (int, float)):
            return Dual(other, 0.0)
        raise TypeError(f"Dual does not support {operation!r} with {type(other).__name__}; "
                        "combine a Dual only with int, float or Dual")

    def __add__(self, other):
        other = Dual.lift(other, "+")
        return Dual(self.value + other.value, self.tangent + other.tangent)

    def __sub__(self, other):
        other = Dual.lift(other, "-")
        return Dual(self.value - other.value, self.tangent - other.tangent)

    def __mul__(self, other):
        other = Dual.lift(other, "*")
        return Dual(self.value * other.value, self.tangent * other.value + self.value * other.tangent)

    def __truediv__(self, other):
        other = Dual.lift(other, "/")
        return Dual(self.value / other.value,
                    (self.tangent * other.value - self.value * other.tangent) / other.value ** 2)

    # 2 + x, 2 - x, 2 * x, 2 / x: Python asks the Dual on the right.
    def __radd__(self, other):
        return Dual.lift(other, "+") + self

    def __rsub__(self, other):
        return Dual.lift(other, "-") - self

    def __rmul__(self, other):
        return Dual.lift(other, "*") * self

    def __rtruediv__(self, other):
        return Dual.lift(other, "/") / self

    def __neg__(self):
        return Dual(-self.value, -self.tangent)

    def __pow__(self, exponent):
        if not isinstance(exponent, (int, float)):
            raise TypeError(f"Dual ** {type(exponent).__name__} is not supported: only a constant (int or float) "
                            "exponent is; for a variable exponent write (exponent * base.log()).exp()")
        if self.value < 0 and exponent != int(exponent):
            raise ValueError(f"a negative number ({self.value}) to the non-integer power {exponent} is not real")
        return Dual(self.value ** exponent, exponent * self.value ** (exponent - 1) * self.tangent)

    def sin(self):
        return Dual(math.sin(self.value), math.cos(self.value) * self.tangent)

    def cos(self):
        return Dual(math.cos(self.value), -math.sin(self.value) * self.tangent)

    def exp(self):
        e = math.exp(self.value)
        return Dual(e, e * self.tangent)

    def log(self):
        if self.value <= 0:
            raise ValueError(f"log needs a positive value, got {self.value}")
        return Dual(math.log(self.value), self.tangent / self.value)

    def tanh(self):
        t = math.tanh(self.value)
        return Dual(t, (1 - t * t) * self.tangent)

    def sigmoid(self):
        s = stable_sigmoid(self.value)
        return Dual(s, s * (1 - s) * self.tangent)

    def relu(self):
        slope = 1.0 if self.value > 0 else 0.0  # at exactly 0 we take 0, as PyTorch does
        return Dual(max(self.value, 0.0), slope * self.tangent)


def topological_order_recursive(output):
    # The same order, recursively: fine for small graphs, too deep for long chains.
    order, visited = [], set()

    def visit(node):
        if id(node) not in visited:
            visited.add(id(node))
            for parent in node.parents:
                visit(parent)
            order.append(node)   # after every parent

    visit(output)
    return order


def topological_order(output):
    # Every node that `output` depends on, each listed after all of its parents.
    order, visited = [], set()
    stack = [(output, False)]
    while stack:
        node, parents_done = stack.pop()
        if parents_done:          # all its parents are already in `order`
            order.append(node)
            continue
        if id(node) in visited:   # reached before through another path
            continue
        visited.add(id(node))
        stack.append((node, True))  # come back to it after its parents
        for parent in node.parents:
            if id(parent) not in visited:
                stack.append((parent, False))
    return order


class Value:
    # A scalar that remembers how it was computed, so that gradients can flow back through it.
    created = 0        # nodes made (work of the forward pass)
    rules_run = 0      # backward rules executed (work of the backward pass)
    ACCUMULATE = True  # set to False only to demonstrate the fan-out bug below

    def __init__(self, data, parents=(), operation="input"):
        self.data = float(data)
        self.grad = 0.0
        self.parents = parents
        self.operation = operation
        self.backward_rule = lambda: None  # inputs and constants pass nothing back
        Value.created += 1

    def __repr__(self):
        return f"Value({self.operation}: data={self.data:.6g}, grad={self.grad:.6g})"

    def receive(self, gradient):
        # One contribution to d(output)/d(self), from one use of self.
        if Value.ACCUMULATE:
            self.grad += gradient
        else:
            self.grad = gradient  # the bug: a later use overwrites the earlier ones

    @staticmethod
    def lift(other, operation):
        if isinstance(other, Value):
            return other
        if isinstance(other, (int, float)):
            return Value(other, operation="constant")
        raise TypeError(f"Value does not support {operation!r} with {type(other).__name__}; "
                        "combine a Value only with int, float or Value")

    def __add__(self, other):
        other = Value.lift(other, "+")
        out = Value(self.data + other.data, (self, other), "+")

        def backward_rule():  # add gate: the gradient passes through to both inputs
            self.receive(out.grad)
            other.receive(out.grad)
        out.backward_rule = backward_rule
        return out

    def __mul__(self, other):
        other = Value.lift(other, "*")
        out = Value(self.data * other.data, (self, other), "*")

        def backward_rule():  # multiply gate: each input gets the gradient times the OTHER input's value
            self.receive(out.grad * other.data)
            other.receive(out.grad * self.data)
        out.backward_rule = backward_rule
        return out

    def unary(self, result, local_derivative, operation):
        out = Value(result, (self,), operation)

        def backward_rule():  # unary gate: the gradient times the local derivative
            self.receive(out.grad * local_derivative)
        out.backward_rule = backward_rule
        return out

    def __pow__(self, exponent):
        if not isinstance(exponent, (int, float)):
            raise TypeError(f"Value ** {type(exponent).__name__} is not supported: only a constant (int or float) "
                            "exponent is; for a variable exponent write (exponent * base.log()).exp()")
        if self.data < 0 and exponent != int(exponent):
            raise ValueError(f"a negative number ({self.data}) to the non-integer power {exponent} is not real")
        return self.unary(self.data ** exponent, exponent * self.data ** (exponent - 1), f"**{exponent}")

    def sin(self):
        return self.unary(math.sin(self.data), math.cos(self.data), "sin")

    def cos(self):
        return self.unary(math.cos(self.data), -math.sin(self.data), "cos")

    def exp(self):
        e = math.exp(self.data)
        return self.unary(e, e, "exp")

    def log(self):
        if self.data <= 0:
            raise ValueError(f"log needs a positive value, got {self.data}")
        return self.unary(math.log(self.data), 1.0 / self.data, "log")

    def tanh(self):
        t = math.tanh(self.data)
        return self.unary(t, 1 - t * t, "tanh")

    def sigmoid(self):
        s = stable_sigmoid(self.data)
        return self.unary(s, s * (1 - s), "sigmoid")

    def relu(self):
        return self.unary(max(self.data, 0.0), 1.0 if self.data > 0 else 0.0, "relu")

    # Built from the gates above.
    def __neg__(self):
        return self * -1.0

    def __sub__(self, other):
        return self + (-Value.lift(other, "-"))

    def __truediv__(self, other):
        return self * Value.lift(other, "/") ** -1

    def __radd__(self, other):
        return Value.lift(other, "+") + self

    def __rsub__(self, other):
        return Value.lift(other, "-") - self

    def __rmul__(self, other):
        return Value.lift(other, "*") * self

    def __rtruediv__(self, other):
        return Value.lift(other, "/") / self

    def backward(self):
        # Fill .grad of every node this value depends on with d(self)/d(node), in one backward pass.
        order = topological_order(self)
        for node in order:
            node.grad = 0.0
        self.grad = 1.0
        for node in reversed(order):  # from the output back to the inputs
            node.backward_rule()
            Value.rules_run += 1


ACTIVATIONS = {
    # name: (function, derivative written with z = input and y = output, whichever is cheaper)
    "identity": (lambda z: z, lambda z, y: torch.ones_like(z)),
    "relu": (torch.relu, lambda z, y: (z > 0).to(z.dtype)),
    "sigmoid": (torch.sigmoid, lambda z, y: y * (1 - y)),
    "tanh": (torch.tanh, lambda z, y: 1 - y * y),
}


def dense_forward(x, weight, bias, activation):
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; choose one of {sorted(ACTIVATIONS)}")
    if x.ndim != 2 or weight.ndim != 2 or bias.ndim != 1:
        raise ValueError(f"dense layer needs x [batch, inputs], W [outputs, inputs], b [outputs]; "
                         f"got shapes {tuple(x.shape)}, {tuple(weight.shape)}, {tuple(bias.shape)}")
    if x.shape[1] != weight.shape[1]:
        raise ValueError(f"dense layer: x has {x.shape[1]} features per example but W has shape "
                         f"{tuple(weight.shape)} = [outputs, inputs], so it expects {weight.shape[1]}")
    if bias.shape[0] != weight.shape[0]:
        raise ValueError(f"dense layer: b has {bias.shape[0]} entries but W has {weight.shape[0]} outputs")
    z = x @ weight.T + bias
    y = ACTIVATIONS[activation][0](z)
    cache = (x, weight, z, y, activation)  # what the backward pass will need
    return y, cache


def dense_backward(grad_y, cache):
    x, weight, z, y, activation = cache
    if grad_y.shape != y.shape:
        raise ValueError(f"dense layer: the upstream gradient has shape {tuple(grad_y.shape)} "
                         f"but the layer's output has shape {tuple(y.shape)}")
    grad_z = grad_y * ACTIVATIONS[activation][1](z, y)  # unary gate
    grad_x = grad_z @ weight                              # circuit 1: to the inputs
    grad_weight = grad_z.T @ x                            # circuit 2: to the weights (summed over the batch)
    grad_bias = grad_z.sum(dim=0)                         #            and to the bias
    return grad_x, grad_weight, grad_bias


def make_spirals(n_points, generator, turns=1.75, noise=0.05):
    t = torch.rand(n_points, generator=generator, dtype=DTYPE)
    labels = torch.randint(0, 2, (n_points,), generator=generator).to(DTYPE)
    angle = 0.4 + t * turns * 2 * math.pi + math.pi * labels  # the second spiral is the first turned by 180 degrees
    radius = 0.15 + t
    points = torch.stack([radius * torch.cos(angle), radius * torch.sin(angle)], dim=1)
    return points + noise * torch.randn(n_points, 2, generator=generator, dtype=DTYPE), labels


def init_mlp(sizes, hidden_activation, generator):
    # He (Kaiming) initialisation, std sqrt(2 / fan_in); the last layer is linear and outputs the logit.
    layers = []
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append({"weight": torch.randn(fan_out, fan_in, generator=generator, dtype=DTYPE) * math.sqrt(2 / fan_in),
                       "bias": torch.zeros(fan_out, dtype=DTYPE),
                       "activation": hidden_activation if i < len(sizes) - 2 else "identity"})
    return layers


def mlp_forward(x, layers):
    caches = []
    for layer in layers:
        x, cache = dense_forward(x, layer["weight"], layer["bias"], layer["activation"])
        caches.append(cache)
    return x, caches


def mlp_backward(grad_output, caches):
    gradients = []
    for cache in reversed(caches):
        grad_output, grad_weight, grad_bias = dense_backward(grad_output, cache)
        gradients.append({"weight": grad_weight, "bias": grad_bias})
    return gradients[::-1]  # in the order of the layers


def cross_entropy_and_gradient(logits, labels):
    loss = (F.softplus(logits) - labels * logits).mean()  # softplus(z) = log(1 + e^z), computed stably
    return loss, (torch.sigmoid(logits) - labels) / len(labels)


def loss_and_gradients(layers, x, labels):
    logits, caches = mlp_forward(x, layers)
    loss, grad_logits = cross_entropy_and_gradient(logits[:, 0], labels)
    return loss.item(), mlp_backward(grad_logits[:, None], caches)


def accuracy(layers, x, labels):
    logits, _ = mlp_forward(x, layers)
    return ((logits[:, 0] > 0).to(DTYPE) == labels).to(DTYPE).mean().item()


def train_mlp(layers, x, labels, steps, learning_rate, momentum, title=None):
    # Gradient descent with momentum; returns the loss at every step. A title turns on the live plot.
    velocity = [{key: torch.zeros_like(layer[key]) for key in ("weight", "bias")} for layer in layers]
    dashboard = display.Dashboard(title, every_seconds=5) if title else None  # drawing is slower than a step
    losses = []
    for step in tqdm(range(steps), desc=title or "training", leave=False):
        loss, gradients = loss_and_gradients(layers, x, labels)
        if not math.isfinite(loss):
            raise ValueError(f"the loss became {loss} at step {step}: lower the learning rate")
        for layer, gradient, speed in zip(layers, gradients, velocity):
            for key in ("weight", "bias"):
                speed[key] = momentum * speed[key] + gradient[key]
                layer[key] = layer[key] - learning_rate * speed[key]
        losses.append(loss)
        if dashboard:
            dashboard.update(step, loss)
    if dashboard:
        dashboard.close()
    return losses
