"""`train.init`: training that starts from the weights of another run or of a shipped model
(`init = "radar"`): fine-tuning on a user's own archive. The recipe's `[model]` must build the
same network (every tensor the same name and shape); the data contract is the recipe's own, so
the new run's card describes the archive it was tuned on. Applied once, at a fresh start: a
resumed run continues from its own checkpoint."""

from __future__ import annotations

from typing import Any

from stforecast.errors import ConfigError


def load(net: Any, init: str | None) -> Any:
    """`net` with the weights of `init` (selected weights of a run, or a shipped model)."""
    if init is None:
        return net
    from stforecast.rundir.load import load_model

    source, card = load_model(init, device="cpu")
    mine, theirs = net.state_dict(), source.state_dict()
    differ = sorted(
        k for k in mine.keys() | theirs.keys()
        if k not in mine or k not in theirs or mine[k].shape != theirs[k].shape
    )  # fmt: skip
    if differ:
        arch = card["architecture"]
        raise ConfigError(
            f"train.init: {init} is a {arch['name']} with hidden channels "
            f"{arch.get('hidden_channels')} and patch {arch.get('patch_size')}; the recipe's "
            f"[model] builds another network ({len(differ)} tensors differ, e.g. {differ[0]})"
        )
    net.load_state_dict(theirs)
    return net
