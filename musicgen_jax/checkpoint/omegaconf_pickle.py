"""OmegaConf configurations inside torch pickles (audiocraft's solver checkpoints keep their `xp.cfg` as a
`DictConfig`), read as plain dicts and lists without importing omegaconf or unpickling anything else: each
OmegaConf class a pickle names is allowed under its name (`torch.serialization.safe_globals`), as a stand-in that
keeps its pickled state, and `plain` turns the stand-ins into their values (`${...}` interpolations stay text)."""

from __future__ import annotations

import collections
from typing import Any


class _Node:
    """An OmegaConf node as pickled: `DictConfig` / `ListConfig` keep `_content`, value nodes `_val`."""

    def __setstate__(self, state: dict) -> None:
        self.state = state


_ANY = object()  # `typing.Any`, the element type OmegaConf records
NAMES = (
    "omegaconf.dictconfig.DictConfig",
    "omegaconf.listconfig.ListConfig",
    "omegaconf.nodes.AnyNode",
    "omegaconf.nodes.StringNode",
    "omegaconf.nodes.IntegerNode",
    "omegaconf.nodes.FloatNode",
    "omegaconf.nodes.BooleanNode",
    "omegaconf.base.Metadata",
    "omegaconf.base.ContainerMetadata",
)


def safe_globals() -> list:
    """The `safe_globals` entries that let `torch.load(weights_only=True)` read OmegaConf objects."""
    return [(_Node, name) for name in NAMES] + [dict, list, int, (_ANY, "typing.Any"), collections.defaultdict]


def plain(value: Any) -> Any:
    """`value` with every OmegaConf stand-in replaced by its content (dicts, lists, scalars)."""
    if isinstance(value, _Node):
        state = value.state
        return plain(state["_content"] if "_content" in state else state.get("_val"))
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value
