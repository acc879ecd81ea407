"""Device meshes and the one table that maps logical axis names to mesh axes (the t5x / MaxText pattern).

Modules name the axes of their parameters (`nn.with_logical_partitioning`) and activations
(`nn.with_logical_constraint`) with logical names; only `LOGICAL_RULES` says which mesh axis each
name is split over, so one model runs on 1 CPU, 8 GPUs or a TPU pod by changing the mesh alone.

Mesh axes: `data` (batch), `fsdp` (batch, and parameters split along their model width, gathered
for use), `tensor` (heads, feed-forward width, vocabulary). Rules are tried in order for each array
and a mesh axis is used at most once per array, so an activation `[batch, length, embed]` splits
its batch over data x fsdp and keeps `embed` whole, while a kernel `[embed, mlp]` splits over
fsdp x tensor. Names that match no rule are not split.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any, Iterator, Sequence

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp", "tensor")

LOGICAL_RULES: tuple[tuple[str, Any], ...] = (
    ("batch", ("data", "fsdp")),
    ("heads", "tensor"),
    ("mlp", "tensor"),
    ("vocab", "tensor"),
    ("embed", "fsdp"),
    ("length", None),
    ("kv", None),
    ("text_embed", None),
    ("chroma", None),
    ("layers", None),
)


def make_mesh(data: int = -1, fsdp: int = 1, tensor: int = 1, devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A `(data, fsdp, tensor)` mesh over `devices` (default: all, across hosts); one size may be -1
    (the rest of the devices)."""
    devices = list(jax.devices() if devices is None else devices)
    sizes = [data, fsdp, tensor]
    if sizes.count(-1) > 1 or any(s == 0 or s < -1 for s in sizes):
        raise ValueError(f"mesh sizes must be positive, one may be -1: data={data} fsdp={fsdp} tensor={tensor}")
    known = math.prod(s for s in sizes if s != -1)
    if -1 in sizes:
        if len(devices) % known:
            raise ValueError(f"{len(devices)} devices do not divide into a mesh with {known} devices per data row")
        sizes[sizes.index(-1)] = len(devices) // known
    if math.prod(sizes) != len(devices):
        raise ValueError(f"mesh data={sizes[0]} x fsdp={sizes[1]} x tensor={sizes[2]} needs {math.prod(sizes)} "
                         f"devices, there are {len(devices)}")
    return Mesh(np.asarray(devices).reshape(sizes), MESH_AXES)


@contextlib.contextmanager
def activation_sharding(mesh: Mesh | None, rules=LOGICAL_RULES) -> Iterator[None]:
    """Context for tracing a model (entered inside the jitted function): its `with_logical_constraint`s
    bind to `mesh`'s axes by `rules`. With no mesh, the constraints stay no-ops (single device)."""
    if mesh is None:
        yield
        return
    with jax.sharding.use_abstract_mesh(mesh.abstract_mesh), nn.logical_axis_rules(rules):
        yield


def shardings(logical_specs: Any, mesh: Mesh, rules=LOGICAL_RULES) -> Any:
    """Logical `PartitionSpec`s (a pytree, e.g. `musicgen_jax.lm.model.param_specs`) -> `NamedSharding`s, in
    the same tree structure: only `PartitionSpec`s are leaves, so other empty tuples (optax's `MaskedNode`
    of frozen parameters) stay empty nodes, as in the state they describe."""
    return jax.tree.map(lambda spec: nn.logical_to_mesh_sharding(spec, mesh, rules), logical_specs,
                        is_leaf=lambda x: isinstance(x, PartitionSpec))


def shard(tree: Any, logical_specs: Any, mesh: Mesh, rules=LOGICAL_RULES) -> Any:
    """Place host arrays (the same full values on every process) as global arrays split by their
    logical specs; works across hosts, each process supplying its own devices' pieces."""
    def place(path, x, sharding: NamedSharding):
        x = np.asarray(x)
        try:
            sharding.shard_shape(x.shape)
        except ValueError as e:
            raise ValueError(f"cannot split {jax.tree_util.keystr(path)} {x.shape} as {sharding.spec} over mesh "
                             f"{dict(mesh.shape)}: {e}") from None
        return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])

    return jax.tree_util.tree_map_with_path(place, tree, shardings(logical_specs, mesh, rules))
