"""Mixed precision: gg.autocast (its table: gpugrad/ops/autocasting.py) and gg.amp.GradScaler."""

import contextlib

import numpy as np

from gpugrad import devices
from gpugrad import recording
from gpugrad.devices.cuda import specs


@contextlib.contextmanager
def autocast(dtype="bfloat16", enabled=True):
    """Inside the block, matmul, linear and einsum compute in `dtype` (bfloat16 or float16)
    and the numerically sensitive ops in float32; parameters keep their dtype and their
    gradients arrive in it. Nests (an inner block with enabled=False turns it off)."""
    dt = devices.as_dtype(dtype)
    if dt not in devices.LOW_PRECISION:
        raise TypeError(f"autocast: dtype must be bfloat16 or float16, got {dt}")
    with recording.autocasting(dt if enabled else None):
        yield


def autocast_dtype():
    """The dtype autocast computes products in here, or None outside it."""
    return recording.autocast_dtype()


class GradScaler:
    """Dynamic loss scaling for float16 training, as torch.amp.GradScaler: scale(loss) before
    backward, step(optimizer) unscales the gradients and skips the step where any is inf or
    NaN, update() backs the scale off after such a step and grows it after growth_interval
    clean ones. The inf check runs on the gradients' device and is read once per step."""

    def __init__(self, init_scale=2.0 ** 16, growth_factor=2.0, backoff_factor=0.5,
                 growth_interval=2000, enabled=True):
        if not init_scale > 0 or not growth_factor > 1 or not 0 < backoff_factor < 1:
            raise ValueError(f"GradScaler: need init_scale > 0, growth_factor > 1 and "
                             f"0 < backoff_factor < 1, got {init_scale}, {growth_factor}, "
                             f"{backoff_factor}")
        if not isinstance(growth_interval, int) or growth_interval < 1:
            raise ValueError(f"GradScaler: growth_interval must be a positive int, got "
                             f"{growth_interval!r}")
        self._scale = np.float32(init_scale)
        self.growth_factor, self.backoff_factor = float(growth_factor), float(backoff_factor)
        self.growth_interval, self.enabled = growth_interval, enabled
        self._growth_tracker = 0
        self._found_inf = {}  # id(optimizer) -> whether its gradients held inf or NaN

    def get_scale(self):
        return float(self._scale) if self.enabled else 1.0

    def scale(self, outputs):
        """outputs (a tensor, or a list or tuple of them) times the scale, recorded (inside
        record() or not: the loss it scales was) so that backward goes through it."""
        if not self.enabled:
            return outputs
        if isinstance(outputs, (list, tuple)):
            return type(outputs)(self.scale(o) for o in outputs)
        with recording.record(train_mode=recording.is_training()):
            return outputs * self._scale.astype(outputs.dtype)

    def unscale_(self, optimizer):
        """Divide the optimizer's gradients by the scale, in place, and note whether any
        holds inf or NaN (one flag on the device, read by step)."""
        if not self.enabled:
            return
        if id(optimizer) in self._found_inf:
            raise RuntimeError("GradScaler.unscale_ was already called for this optimizer "
                               "since the last update()")
        inv = np.float32(1.0 / np.float64(self._scale))  # PyTorch's: the reciprocal in float64
        found = {}  # device -> a 0-d float32 flag there, set to 1 by an inf or NaN
        for p in optimizer.params:
            if p.grad is None:
                continue
            g = p.grad.data
            be = devices.get(p.device)
            with be.active:
                flag = found.get(p.device)
                if flag is None:
                    flag = found[p.device] = be.xp.zeros((), np.float32)
                unscale = devices.fused("unscale_and_check", be.xp, g, flag)  # one kernel
                if unscale:
                    unscale(g, flag, inv)
                else:
                    specs.UNSCALE_AND_CHECK.reference(be.xp, g, flag, inv)
                recording.changed_in_place(g)
        self._found_inf[id(optimizer)] = list(found.values()) or None

    def step(self, optimizer):
        """optimizer.step() unless a gradient held inf or NaN (unscaling first if needed)."""
        if not self.enabled:
            return optimizer.step()
        if id(optimizer) not in self._found_inf:
            self.unscale_(optimizer)
        found = self._found_inf[id(optimizer)]
        devices.forbid_host_read("GradScaler.step (whether a gradient is inf)")
        skipped = found is not None and any(bool(f) for f in found)  # one read per device
        self._found_inf[id(optimizer)] = skipped
        return None if skipped else optimizer.step()

    def update(self):
        """Back the scale off after a skipped step, grow it after growth_interval clean ones."""
        if not self.enabled:
            return
        if not self._found_inf:
            raise RuntimeError("GradScaler.update: no step() or unscale_() since the last one")
        if any(f if isinstance(f, bool) else any(bool(x) for x in f)
               for f in self._found_inf.values() if f is not None):
            self._scale = np.float32(self._scale * np.float32(self.backoff_factor))
            self._growth_tracker = 0
        else:
            self._growth_tracker += 1
            if self._growth_tracker == self.growth_interval:
                grown = np.float32(self._scale * np.float32(self.growth_factor))
                if np.isfinite(grown):
                    self._scale = grown
                self._growth_tracker = 0
        self._found_inf.clear()

    def state_dict(self):
        return {"scale": float(self._scale), "growth_factor": self.growth_factor,
                "backoff_factor": self.backoff_factor, "growth_interval": self.growth_interval,
                "_growth_tracker": self._growth_tracker} if self.enabled else {}

    def load_state_dict(self, state):
        expected = {"scale", "growth_factor", "backoff_factor", "growth_interval",
                    "_growth_tracker"}
        if set(state) != expected:
            raise KeyError(f"GradScaler.load_state_dict: keys {sorted(state)}, expected "
                           f"{sorted(expected)}")
        fresh = GradScaler(state["scale"], state["growth_factor"], state["backoff_factor"],
                           int(state["growth_interval"]))
        self._scale, self.growth_factor = fresh._scale, fresh.growth_factor
        self.backoff_factor, self.growth_interval = fresh.backoff_factor, fresh.growth_interval
        self._growth_tracker = int(state["_growth_tracker"])
