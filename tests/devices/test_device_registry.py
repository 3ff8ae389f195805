"""The registry finds a device's Backend by its kind and an array's by the array: each Backend
recognizes its own arrays and namespace, and the functions spelled differently per device
(erf, scatter-add, fused kernels, matmul) ask it."""

import math

import numpy as np
import pytest

from gpugrad import devices
from gpugrad.devices import backend

LOCAL_DEVICES = ["cpu", "strict", "meta"]  # the ones every machine has


@pytest.mark.parametrize("name, canonical", [
    ("cpu", "cpu"), (" CPU ", "cpu"), ("strict", "strict"), ("meta", "meta"),
    ("cuda", "cuda:0"), ("gpu", "cuda:0"), ("cuda:3", "cuda:3"), ("GPU:02", "cuda:2"),
])
def test_device_names_parse_to_their_canonical_form(name, canonical):
    assert devices.canonical_device(name) == canonical


@pytest.mark.parametrize("name", ["tpu", "cpu:0", "strict:1", "cuda:", "cuda:-1", "cuda:1:2", ""])
def test_a_device_name_of_no_kind_is_refused_by_name(name):
    with pytest.raises(ValueError, match="unknown device"):
        devices.canonical_device(name)


@pytest.mark.parametrize("device", LOCAL_DEVICES)
def test_each_backend_recognizes_its_own_arrays_and_namespace(device):
    be = devices.get(device)
    assert isinstance(be, backend.Backend) and be.device == device
    arr = be.xp.zeros((2, 3), np.float32)
    assert devices.device_of_array(arr) == device and devices.is_backend_array(arr)
    assert devices.is_device_array(arr) == (not be.host_arrays)
    others = [devices.get(d).xp.zeros(2) for d in LOCAL_DEVICES if d != device]
    assert all(be.device_of(a) is None for a in others)
    assert be.owns_namespace(be.xp) and not be.owns_namespace(object())


@pytest.mark.parametrize("obj", [[1.0], 1.0, np.float64(1.0), None, "cpu"])
def test_what_is_no_device_array_has_no_device(obj):
    assert devices.device_of_array(obj) is None and not devices.is_backend_array(obj)
    assert not devices.is_device_array(obj) and devices.address_of(obj) is None


def test_memory_addresses_are_the_underlying_buffers():
    a = np.arange(4.0)
    assert devices.address_of(a) == a.__array_interface__["data"][0]
    s = devices.get("strict").xp.asarray(a)
    assert devices.address_of(s) == devices.address_of(s.reshape(2, 2))
    assert devices.address_of(s[1:]) == devices.address_of(s) + 8
    assert devices.address_of(devices.get("meta").xp.zeros(3)) is None


def test_only_devices_with_kernels_give_fused_launchers():
    assert devices.fused("sigmoid_fwd", np) is None
    assert devices.fused("sigmoid_fwd", devices.get("meta").xp) is None
    assert devices.fused("sigmoid_fwd", devices.get("strict").xp) is not None
    assert devices.fused("sigmoid_fwd", object()) is None  # no device's namespace


@pytest.mark.parametrize("device", ["cpu", "strict"])
def test_erf_and_scatter_add_ask_the_arrays_device(device):
    be = devices.get(device)
    x = np.array([-1.5, 0.0, 0.25, 3.0])
    got = devices.erf(be.asarray(x))
    assert devices.device_of_array(got) == device
    np.testing.assert_allclose(be.to_host(got), [math.erf(v) for v in x], rtol=1e-12)
    out = be.xp.zeros(3)
    assert devices.scatter_add(out, (be.asarray(np.array([0, 2, 0])),), be.asarray(x[:3])) is out
    np.testing.assert_array_equal(be.to_host(out), [-1.5 + 0.25, 0.0, 0.0])


def test_erf_of_a_numpy_scalar_and_on_the_meta_device():
    assert devices.erf(np.float32(0.5)) == pytest.approx(math.erf(0.5), rel=1e-6)
    meta = devices.get("meta").xp.zeros((2, 5), np.float32)
    got = devices.erf(meta)
    assert got.shape == (2, 5) and got.dtype == np.float32


def test_an_array_of_no_device_is_refused_by_the_functions_that_ask_its_device():
    with pytest.raises(TypeError, match="expected an array of a gpugrad device, got list"):
        devices.scatter_add([0.0], (0,), 1.0)


def test_dlpack_import_goes_to_the_device_of_the_dlpack_device_type():
    a = np.arange(3.0)
    assert devices.device_of_array(devices.from_dlpack(a)) == "cpu"
    s = devices.get("strict").xp.asarray(a)
    assert devices.from_dlpack(s) is s  # zero-copy on its own device
