"""sharding.make_mesh: the ``-1`` axis, Auto axis types, the devices it is given, and one clear
ValueError for every shape that does not fit (8 fake CPU devices, tests/conftest.py)."""

import jax
import pytest
from jax.sharding import AxisType

from ropo_jax.parallel import sharding


@pytest.mark.parametrize(
    ("shape", "sizes"),
    [((-1, 1, 1), (8, 1, 1)), ((1, -1, 1), (1, 8, 1)), ((2, -1, 2), (2, 2, 2)), ((2, 4, 1), None)],
)
def test_minus_one_takes_the_rest_and_every_device_is_used_once(shape, sizes):
    mesh = sharding.make_mesh(shape)
    assert mesh.axis_names == sharding.MESH_AXES
    assert tuple(mesh.shape.values()) == (sizes or shape)
    assert sorted(d.id for d in mesh.devices.flat) == sorted(d.id for d in jax.devices())
    # Auto, not recent jax's Explicit default: model code relies on sharding propagation.
    assert mesh.axis_types == (AxisType.Auto,) * 3


def test_given_devices_and_axis_names():
    devices = jax.devices()[4:]
    mesh = sharding.make_mesh((2, -1), axis_names=("data", "model"), devices=devices)
    assert dict(mesh.shape) == {"data": 2, "model": 2}
    assert sorted(d.id for d in mesh.devices.flat) == sorted(d.id for d in devices)


@pytest.mark.parametrize(
    ("shape", "match"),
    [
        ((2, 2), r"one entry per axis \('data', 'fsdp', 'tensor'\)"),
        ((-1, -1, 1), "at most one axis may be -1"),
        ((3, -1, 1), "does not fit 8 devices"),
        ((0, -1, 1), "does not fit 8 devices"),
        ((-2, 1, 1), "does not fit 8 devices"),
        ((2, 2, 1), r"uses 4 devices but 8 are available; set one axis to -1"),
    ],
)
def test_shapes_that_do_not_fit_raise_one_clear_error(shape, match):
    with pytest.raises(ValueError, match=match):
        sharding.make_mesh(shape)
