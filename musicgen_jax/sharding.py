"""Device meshes and the one table that maps logical axis names to mesh axes (the t5x / MaxText pattern).

Modules name the axes of their parameters (`nn.with_logical_partitioning`: `embed`, `mlp`, `heads`, ...)
and of their activations (`nn.with_logical_constraint`: `activation_*`, MaxText's convention, the tuples
below) with logical names; only the rules (`LOGICAL_RULES`) say which mesh axis each name is split over, so
one model (the LM, the T5 encoder, the codec) runs on 1 CPU, 8 GPUs or a TPU pod by changing the mesh alone.
"""

from __future__ import annotations

import contextlib
import inspect
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp", "tensor")

# activation layouts, their axes named apart from the parameters'
TOKENS = ("activation_batch", "activation_length", "activation_embed")  # [B, T, D]
HEADS = ("activation_batch", "activation_heads", "activation_length", "activation_kv")  # [B, H, T, Dh], KV cache
HIDDEN = ("activation_batch", "activation_length", "activation_mlp")  # [B, T, ffn] (feed-forward)
LOGITS = ("activation_batch", None, "activation_length", "activation_vocab")  # [B, K, T, card]
IDS = ("activation_batch", "activation_length")  # [B, N] token ids
SIGNAL = ("activation_batch", None, "activation_length")  # [B, C or K, T] audio or codes

LOGICAL_RULES: tuple[tuple[str, Any], ...] = (
    ("activation_batch", ("data", "fsdp")),
    ("activation_heads", "tensor"),
    ("activation_mlp", "tensor"),
    ("activation_vocab", "tensor"),
    ("activation_length", None),
    ("activation_embed", None),
    ("activation_kv", None),
    ("heads", "tensor"),
    ("mlp", "tensor"),
    ("vocab", "tensor"),
    ("embed", "fsdp"),
    ("kv", None),
    ("text_embed", None),
    ("chroma", None),
    ("layers", None),
    # the codec (EnCodec 32 kHz: 58 M parameters) is replicated: its batch splits, its weights do not
    ("taps", None),
    ("in_channels", None),
    ("channels", None),
    ("gates", None),
    ("codebooks", None),
    ("bins", None),
)


def override_rules(overrides: Sequence[Sequence[Any]], rules=LOGICAL_RULES) -> tuple[tuple[str, Any], ...]:
    """`rules` with the entries of `overrides` (`[(name, mesh axes)]`, e.g. `[("embed", None)]`) in place of
    their names' (a new name is appended); ValueError for a mesh axis that is not one of `MESH_AXES`. How a
    run changes the table: the experiment config's `logical_axis_rules`."""
    overrides = {str(name): _axes(axes) for name, axes in overrides}
    for name, axes in overrides.items():
        unknown = [a for a in ((axes,) if isinstance(axes, str) else axes or ()) if a not in MESH_AXES]
        if unknown:
            raise ValueError(f"logical axis rule {name!r}: {unknown} not among the mesh axes {MESH_AXES}")
    known = {name for name, _ in rules}
    return tuple((name, overrides.get(name, axes)) for name, axes in rules) + tuple(
        (name, axes) for name, axes in overrides.items() if name not in known
    )


def _axes(axes: Any) -> Any:
    """A rule's mesh axes, hashable: None, a name, or a tuple of names."""
    return tuple(axes) if isinstance(axes, (list, tuple)) else axes


def mesh_axes(name: str, rules=LOGICAL_RULES) -> Any:
    """The mesh axes of logical axis `name` by `rules` (its first rule)."""
    return next(axes for rule, axes in rules if rule == name)


def batch_multiple(mesh: Mesh | None, rules=LOGICAL_RULES) -> int:
    """What a batch's size must be a multiple of to split over `mesh`: the product of the sizes of the mesh
    axes `activation_batch` splits over by `rules` (1 without a mesh)."""
    if mesh is None:
        return 1
    axes = mesh_axes("activation_batch", rules)
    return math.prod(mesh.shape[a] for a in ((axes,) if isinstance(axes, str) else axes or ()))


def pad_batch(x: Any, mesh: Mesh | None, rules=LOGICAL_RULES) -> Any:
    """`x [B, ...]` (a host or global array, PRNG keys too) with copies of its last row appended up to a
    multiple of `batch_multiple(mesh)`, so that a batch of any size splits over the mesh; rows are computed
    independently and callers drop the copies' results (`[:B]`)."""
    extra = -len(x) % batch_multiple(mesh, rules)
    if not extra:
        return x
    return (jnp if isinstance(x, jax.Array) else np).concatenate([x, *[x[-1:]] * extra])


def logical_specs(init: Callable[[], Any]) -> Any:
    """The logical `PartitionSpec` of every parameter that `init()` (a boxed flax `init` call) creates,
    computed from shapes alone."""
    return nn.get_partition_spec(jax.eval_shape(init))


def make_mesh(data: int = -1, fsdp: int = 1, tensor: int = 1, devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A `(data, fsdp, tensor)` mesh over `devices` (default: all, across hosts); one size may be -1
    (the rest of the devices). By `LOGICAL_RULES`, `data` splits the batch, `fsdp` the batch and the
    parameters along their model width (gathered for use), `tensor` heads, feed-forward width and vocabulary."""
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
        raise ValueError(
            f"mesh data={sizes[0]} x fsdp={sizes[1]} x tensor={sizes[2]} needs {math.prod(sizes)} "
            f"devices, there are {len(devices)}"
        )
    return Mesh(np.asarray(devices).reshape(sizes), MESH_AXES)


def parse_mesh(spec: str) -> dict[str, int]:
    """`"data=4,tensor=2"` -> `{"data": 4, "tensor": 2}`, the sizes `make_mesh` takes (unnamed axes: its
    defaults); ValueError naming what is wrong."""
    sizes = {}
    for part in spec.split(","):
        name, _, value = part.partition("=")
        name = name.strip()
        if name not in MESH_AXES or name in sizes:
            raise ValueError(f"mesh {spec!r}: {name!r} is not one of {', '.join(MESH_AXES)} given once")
        try:
            sizes[name] = int(value)
        except ValueError:
            raise ValueError(
                f"mesh {spec!r}: the size of {name} must be an integer (-1: the rest of the devices), got {value!r}"
            ) from None
    return sizes


@contextlib.contextmanager
def activation_sharding(mesh: Mesh | None, rules=LOGICAL_RULES) -> Iterator[None]:
    """Context for tracing a model (entered inside the jitted function): its `with_logical_constraint`s
    bind to `mesh`'s axes by `rules`. With no mesh, the constraints stay no-ops (single device)."""
    if mesh is None:
        yield
        return
    with jax.sharding.use_abstract_mesh(mesh.abstract_mesh), nn.logical_axis_rules(rules):
        yield


def jit_on_mesh(fn: Callable, static_argnames: tuple[str, ...] = (), **jit_kwargs) -> Callable:
    """`jax.jit(fn)` with one more static keyword argument, `mesh`: `fn` is traced with its model's
    logical constraints bound to that mesh (`activation_sharding`), so the mesh is part of the key."""

    def traced(*args, mesh: Mesh | None = None, **kwargs):
        with activation_sharding(mesh):
            return fn(*args, **kwargs)

    signature = inspect.signature(fn)  # jit maps the static names through it
    traced.__signature__ = signature.replace(
        parameters=[
            *signature.parameters.values(),
            inspect.Parameter("mesh", inspect.Parameter.KEYWORD_ONLY, default=None),
        ]
    )
    traced.__name__ = fn.__name__
    return jax.jit(traced, static_argnames=(*static_argnames, "mesh"), **jit_kwargs)


def shardings(logical_specs: Any, mesh: Mesh, rules=LOGICAL_RULES) -> Any:
    """Logical `PartitionSpec`s (a pytree, e.g. `musicgen_jax.lm.model.param_specs`) -> `NamedSharding`s, in
    the same tree structure: only `PartitionSpec`s are leaves, so other empty tuples (optax's `MaskedNode`
    of frozen parameters) stay empty nodes, as in the state they describe.

    Rules are tried in order for each array and a mesh axis is used at most once per array, so an activation
    `[batch, length, embed]` splits its batch over data x fsdp and keeps its width whole, while a kernel
    `[embed, mlp]` splits over fsdp x tensor. Names that match no rule are not split."""
    return jax.tree.map(
        lambda spec: nn.logical_to_mesh_sharding(spec, mesh, rules),
        logical_specs,
        is_leaf=lambda x: isinstance(x, PartitionSpec),
    )


def place(tree: Any, logical_specs: Callable[[], Any], mesh: Mesh | None, rules=LOGICAL_RULES) -> Any:
    """`shard` on a mesh, by the specs `logical_specs()` returns (computed only then); without one,
    `jax.device_put` on the default device."""
    return jax.device_put(tree) if mesh is None else shard(tree, logical_specs(), mesh, rules)


def shard(tree: Any, logical_specs: Any, mesh: Mesh, rules=LOGICAL_RULES) -> Any:
    """Place arrays as global arrays split by their logical specs; works across hosts. A leaf is either a
    host array (the same full value on every process, each process supplying its own devices' pieces) or
    an array already on the devices (a training run's weights: resharded in place, never gathered to one
    host)."""

    def place(path, x, sharding: NamedSharding):
        try:
            sharding.shard_shape(np.shape(x))
        except ValueError as e:
            raise ValueError(
                f"cannot split {jax.tree_util.keystr(path)} {np.shape(x)} as {sharding.spec} over mesh "
                f"{dict(mesh.shape)}: {e}"
            ) from None
        if isinstance(x, jax.Array) and (jax.process_count() == 1 or not x.is_fully_addressable):
            return jax.device_put(x, sharding)
        x = np.asarray(x)
        return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])

    return jax.tree_util.tree_map_with_path(place, tree, shardings(logical_specs, mesh, rules))


def to_host(x: Any) -> np.ndarray:
    """The whole value of `x` on this host: a global array split over several processes' devices (a
    sampled batch on a pod's mesh) is gathered, each process taking part; anything else is `np.asarray`."""
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(x)
