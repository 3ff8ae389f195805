"""Optimizers: SGD (momentum, weight decay) and Adam, updating parameters in place.

Both follow PyTorch's update rules exactly (weight decay added to the gradient), so a model
trained here and there with the same data and seed follows the same trajectory. On CUDA the SGD
update is one fused kernel (kernels/sgd.cu) per parameter, with or without momentum; elsewhere
the kernel's NumPy reference (its KernelSpec, gpugrad/devices/cuda/specs.py) computes it.

state_dict() / load_state_dict() use PyTorch's layout: {"state": {position: {name: tensor}},
"param_groups": [{hyperparameters..., "params": [0, 1, ...]}]}, with PyTorch's names for the
buffers (momentum_buffer; step, exp_avg, exp_avg_sq), so that saving both the model's and the
optimizer's state and loading them into fresh objects continues training bit for bit.
"""

import collections.abc
import math
import numbers

import numpy as np

from gpugrad import autograd
from gpugrad import devices
from gpugrad import tensors
from gpugrad.devices.cuda import specs


def _checked(who, name, value, low, high=None, low_open=False):
    """A hyperparameter as a float, refused by name (as PyTorch does) if NaN, infinite or out
    of [low, high) (or (low, high) with low_open)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{who}: {name} must be a real number, got {value!r}")
    value = float(value)
    bad_low = value <= low if low_open else value < low
    if not math.isfinite(value) or bad_low or (high is not None and value >= high):
        interval = f"{'(' if low_open else '['}{low}, {high if high is not None else 'inf'})"
        raise ValueError(f"{who}: {name} must be finite and in {interval}, got {value}")
    return value


class Optimizer:
    # what a subclass keeps: its hyperparameters as state_dict() names them, and the names of
    # its per-parameter buffers
    hyperparameters = ("lr",)
    buffers = ()

    def __init__(self, params, lr):
        self.params = list(params)
        if not self.params:
            raise ValueError(f"{type(self).__name__}: no parameters to optimize")
        lr = _checked(type(self).__name__, "lr", lr, 0, low_open=True)
        for i, p in enumerate(self.params):
            if p.grad_req == "null":
                raise ValueError(f"{type(self).__name__}: parameter {i} does not receive a "
                                 f"gradient (call attach_grad() on it)")
        self.lr = lr
        self.state = [{} for _ in self.params]

    def zero_grad(self):
        for p in self.params:
            p.zero_grad()

    def state_bytes(self):
        """Bytes held by the optimizer's buffers (momentum, moments)."""
        return sum(a.nbytes for s in self.state for a in s.values() if hasattr(a, "nbytes"))

    # ------------------------------------------------------------------ state_dict

    def state_dict(self):
        """The hyperparameters and each parameter's buffers, as torch.optim's state_dict:
        {"state": {position: {buffer name: Tensor}}, "param_groups": [{hyperparameters...,
        "params": [0, 1, ...]}]}. A parameter that has no buffers yet (it never had a
        gradient) has no entry. The tensors share the optimizer's buffers, as PyTorch's do:
        gg.save them (or copy them) before the next step if they are to be kept."""
        state = {}
        for i, (p, st) in enumerate(zip(self.params, self.state)):
            if st:
                state[i] = {name: tensors.wrap(st[name], p.device) for name in self.buffers}
        group = self._group()
        group["params"] = list(range(len(self.params)))
        return {"state": state, "param_groups": [group]}

    def load_state_dict(self, state_dict):
        """Take the hyperparameters and buffers of `state_dict` (from state_dict() of an
        optimizer of the same class over parameters of the same shapes and dtypes, possibly
        read back by gg.load). Everything is checked before anything changes, so a refused
        state_dict leaves the optimizer as it was; the buffers are copied onto each
        parameter's device."""
        who = f"{type(self).__name__}.load_state_dict"
        if not isinstance(state_dict, collections.abc.Mapping):
            raise TypeError(f"{who}: expected a dict with 'state' and 'param_groups' (from "
                            f"state_dict()), got {type(state_dict).__name__}")
        _check_keys(who, "the state_dict", state_dict, {"state", "param_groups"})
        groups = state_dict["param_groups"]
        if not isinstance(groups, (list, tuple)) or len(groups) != 1:
            count = len(groups) if isinstance(groups, (list, tuple)) else type(groups).__name__
            raise ValueError(f"{who}: param_groups must be a list of one group (gpugrad "
                             f"optimizers have one), got {count}")
        settings = self._checked_group(who, groups[0])
        staged = self._staged_state(who, state_dict["state"])
        # nothing below can fail: the state_dict was checked and its buffers copied above
        for name, value in settings.items():
            setattr(self, name, value)
        for st, new in zip(self.state, staged):
            if new and st.keys() == new.keys():
                # into the existing buffers, so that a step captured by gg.cuda.graph (which
                # holds them) sees the loaded values too
                for name, arr in new.items():
                    st[name][...] = arr
            else:
                st.clear()
                st.update(new)

    def _group(self):
        """The hyperparameters as state_dict() names them."""
        return {name: getattr(self, name) for name in self.hyperparameters}

    def _checked_group(self, who, group):
        """{attribute: value} for the hyperparameters in a param group, each checked as the
        constructor checks it."""
        if not isinstance(group, collections.abc.Mapping):
            raise TypeError(f"{who}: param_groups[0] must be a dict, got {type(group).__name__}")
        own = set(self.hyperparameters) | {"params"}
        for cls in Optimizer.__subclasses__():  # another optimizer's state_dict, named
            if cls is not type(self) and set(group) == set(cls.hyperparameters) | {"params"}:
                raise TypeError(f"{who}: this state_dict is from {cls.__name__} (its "
                                f"hyperparameters are {', '.join(cls.hyperparameters)}), not "
                                f"{type(self).__name__}; nothing was changed")
        _check_keys(who, "param_groups[0]", group, own)
        positions = group["params"]
        n = len(self.params)
        if not isinstance(positions, (list, tuple)):
            raise TypeError(f"{who}: param_groups[0]['params'] must be a list of parameter "
                            f"positions, got {type(positions).__name__}")
        if len(positions) != n:
            raise ValueError(f"{who}: the state_dict is for {len(positions)} parameter(s) but "
                             f"this optimizer has {n}; nothing was changed")
        if list(positions) != list(range(n)):
            raise ValueError(f"{who}: param_groups[0]['params'] must be the positions 0 to "
                             f"{n - 1} in order, got {list(positions)!r:.200}")
        return self._checked_hyperparameters(f"{who}: param_groups[0]", group)

    def _staged_state(self, who, state):
        """Each parameter's buffers from `state`, checked and copied onto its device; a list
        of dicts by position (empty where the state_dict has none)."""
        if not isinstance(state, collections.abc.Mapping):
            raise TypeError(f"{who}: 'state' must be a dict of parameter position -> buffers, "
                            f"got {type(state).__name__}")
        n = len(self.params)
        for position in state:
            if isinstance(position, bool) or not isinstance(position, numbers.Integral):
                raise TypeError(f"{who}: the keys of 'state' are parameter positions (integers), "
                                f"got {position!r}")
            if not 0 <= position < n:
                raise ValueError(f"{who}: 'state' has an entry for parameter {position} but "
                                 f"this optimizer has {n} parameters (0 to {n - 1})")
        for position, buffers in state.items():
            where = f"state[{position}]"
            if not isinstance(buffers, collections.abc.Mapping):
                raise TypeError(f"{who}: {where} must be a dict of buffer name -> tensor, got "
                                f"{type(buffers).__name__}")
            _check_keys(who, where, buffers, set(self.buffers))
            p = self.params[position]
            for name, value in buffers.items():
                self._check_buffer(who, f"{where}[{name!r}]", name, value, position, p)
        # every entry is good: only now copy (allocate) anything
        staged = [{} for _ in self.params]
        for position, buffers in state.items():
            p = self.params[position]
            staged[position] = {name: self._buffer_on_device(name, value, p)
                                for name, value in buffers.items()}
        return staged

    def _check_buffer(self, who, where, name, value, position, p):
        """A buffer must be a tensor or array of the parameter's shape and dtype."""
        shape, dtype = _shape_and_dtype(who, where, value)
        if shape != p.shape:
            raise ValueError(f"{who}: {where} has shape {shape} but parameter {position} has "
                             f"shape {p.shape}; nothing was changed")
        if dtype != _carry(p):
            raise TypeError(f"{who}: {where} has dtype {dtype} but parameter {position} has "
                            f"dtype {p.dtype}, whose buffers are {_carry(p)}; nothing was "
                            f"changed")

    def _buffer_on_device(self, name, value, p):
        return tensors.tensor(value, device=p.device).data  # a copy, on the parameter's device

    def _checked_hyperparameters(self, who, group):
        """{attribute: value} of the hyperparameters in `group`, checked as __init__ checks
        them (a subclass adds its own)."""
        return {"lr": _checked(who, "lr", group["lr"], 0, low_open=True)}


def _carry(p):
    """The dtype a parameter's update is computed and its buffers are kept in: float32 for a
    16-bit parameter (eps = 1e-8 is 0 in float16, and lr * g rounds away in bfloat16)."""
    return devices.accumulating(p.dtype)


def _carried_update(p, update):
    """update(values, gradient), in place on the parameter for float32 and float64; for a
    16-bit parameter on float32 copies, rounded once back into it."""
    if p.dtype not in devices.LOW_PRECISION:
        return update(p.data, p.grad.data)
    wide = p.data.astype(_carry(p))
    update(wide, p.grad.data.astype(_carry(p)))
    p.data[...] = wide.astype(p.dtype)


def _buffer(st, name, xp, p):
    """The parameter's buffer `name` (zeros the first time), as a step sees it (devices.kept:
    a step gg.compile records sees what is done to it)."""
    buf = st.get(name)
    if buf is None:
        buf = st[name] = xp.zeros_like(p.data, dtype=_carry(p))
    return devices.kept(buf)


def _check_keys(who, where, mapping, expected):
    missing = sorted(expected - set(mapping), key=str)
    unknown = sorted(set(mapping) - expected, key=str)
    if missing or unknown:
        raise KeyError(f"{who}: {where} has {_listed('unknown', unknown)}"
                       f"{' and ' if missing and unknown else ''}{_listed('missing', missing)} "
                       f"(expected {', '.join(sorted(expected))}); nothing was changed")


def _listed(what, keys):
    return f"{what} key(s) {', '.join(map(repr, keys))}" if keys else ""


def _shape_and_dtype(who, where, value):
    """Shape and dtype of a tensor or backend array, read without copying its data."""
    if isinstance(value, tensors.Tensor):
        device = value.device
    elif devices.is_backend_array(value):
        device = devices.device_of_array(value)
    else:
        raise TypeError(f"{who}: {where} must be a tensor or an array, got "
                        f"{type(value).__name__}")
    if device == "meta":
        raise TypeError(f"{who}: {where} is on the meta device, which holds no values")
    return tuple(value.shape), np.dtype(value.dtype)


class SGD(Optimizer):
    """v = momentum * v + g + weight_decay * p;  p -= lr * v  (v is kept only with momentum)."""

    hyperparameters = ("lr", "momentum", "weight_decay")
    buffers = ("momentum_buffer",)

    def __init__(self, params, lr, momentum=0.0, weight_decay=0.0):
        super().__init__(params, lr)
        self.momentum = _checked("SGD", "momentum", momentum, 0)
        self.weight_decay = _checked("SGD", "weight_decay", weight_decay, 0)

    def _checked_hyperparameters(self, who, group):
        return {**super()._checked_hyperparameters(who, group),
                "momentum": _checked(who, "momentum", group["momentum"], 0),
                "weight_decay": _checked(who, "weight_decay", group["weight_decay"], 0)}

    def step(self):
        devices.bake(self, "lr", "momentum", "weight_decay")
        for p, st in zip(self.params, self.state):
            if p.grad is None:
                continue
            autograd.changed_in_place(p.data)
            be = devices.get(p.device)
            xp = be.xp
            with be.active:
                if self.momentum:
                    self._momentum_step(xp, p, _buffer(st, "momentum_buffer", xp, p))
                else:
                    self._plain_step(xp, p)

    # One kernel on the parameter itself where the kernel takes it (a 16-bit one computed in
    # float32 and rounded once); otherwise the kernel's reference, on float32 copies of a
    # 16-bit parameter rounded back once: the same numbers.

    def _momentum_step(self, xp, p, v):
        hyper = (self.lr, self.momentum, self.weight_decay)
        step = devices.fused("sgd_step", xp, p.data, p.grad.data, v)
        if step:
            step(p.data, p.grad.data, v, *hyper)
        else:
            _carried_update(p, lambda w, g: specs.SGD_STEP.reference(xp, w, g, v, *hyper))

    def _plain_step(self, xp, p):
        hyper = (self.lr, self.weight_decay)
        update = devices.fused("sgd_update", xp, p.data, p.grad.data)
        if update:
            update(p.data, p.grad.data, *hyper)
        else:
            _carried_update(p, lambda w, g: specs.SGD_UPDATE.reference(xp, w, g, *hyper))


class Adam(Optimizer):
    """Adam (Kingma and Ba) with bias correction, as torch.optim.Adam."""

    hyperparameters = ("lr", "betas", "eps", "weight_decay")
    buffers = ("step", "exp_avg", "exp_avg_sq")

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(params, lr)
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise TypeError(f"Adam: betas must be a pair (beta1, beta2), got {betas!r}")
        self.beta1 = _checked("Adam", "betas[0]", betas[0], 0, 1)
        self.beta2 = _checked("Adam", "betas[1]", betas[1], 0, 1)
        self.eps = _checked("Adam", "eps", eps, 0)
        self.weight_decay = _checked("Adam", "weight_decay", weight_decay, 0)

    @property
    def betas(self):
        return (self.beta1, self.beta2)

    def _checked_hyperparameters(self, who, group):
        betas = group["betas"]
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise TypeError(f"{who}: betas must be a pair (beta1, beta2), got {betas!r}")
        return {**super()._checked_hyperparameters(who, group),
                "beta1": _checked(who, "betas[0]", betas[0], 0, 1),
                "beta2": _checked(who, "betas[1]", betas[1], 0, 1),
                "eps": _checked(who, "eps", group["eps"], 0),
                "weight_decay": _checked(who, "weight_decay", group["weight_decay"], 0)}

    def _check_buffer(self, who, where, name, value, position, p):
        if name != "step":
            return super()._check_buffer(who, where, name, value, position, p)
        # the step count: a number of steps taken, kept on the device as a 0-d float64
        if isinstance(value, numbers.Real) and not isinstance(value, bool):
            count = float(value)
        else:
            shape, dtype = _shape_and_dtype(who, where, value)
            if shape != () or dtype.kind not in "iuf":
                raise TypeError(f"{who}: {where} must be a number of steps (a 0-d integer or "
                                f"float tensor), got shape {shape} and dtype {dtype}")
            count = float(value.item())
        if not (math.isfinite(count) and count >= 0 and count == int(count)):
            raise ValueError(f"{who}: {where} must be a whole number of steps >= 0, got {count}")

    def _buffer_on_device(self, name, value, p):
        if name != "step":
            return super()._buffer_on_device(name, value, p)
        count = value if isinstance(value, numbers.Real) else value.item()
        return tensors.tensor(np.float64(count), device=p.device).data

    def step(self):
        devices.bake(self, "lr", "beta1", "beta2", "eps", "weight_decay")
        for p, st in zip(self.params, self.state):
            if p.grad is None:
                continue
            autograd.changed_in_place(p.data)
            be = devices.get(p.device)
            xp = be.xp
            with be.active:
                # the step count lives on the device, so a captured step (gg.cuda.graph)
                # advances it on every replay; float64 gives the same corrections as Python's
                t = devices.kept(st.get("step"))
                if t is None:
                    t = st["step"] = xp.zeros((), np.float64)
                t += 1
                m, v = (_buffer(st, name, xp, p) for name in ("exp_avg", "exp_avg_sq"))
                _carried_update(p, lambda w, g: self._adam_step(xp, w, g, m, v, t))

    def _adam_step(self, xp, w, g, m, v, t):
        c1 = (1 - self.beta1 ** t).astype(w.dtype)
        c2 = (1 - self.beta2 ** t).astype(w.dtype)
        g = g + self.weight_decay * w if self.weight_decay else g
        m *= self.beta1
        m += (1 - self.beta1) * g
        v *= self.beta2
        v += (1 - self.beta2) * g * g
        w -= self.lr * (m / c1) / (xp.sqrt(v / c2) + self.eps)
