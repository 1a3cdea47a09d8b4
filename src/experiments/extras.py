"""Conveniences around a run, asked for in conf/extras/: the composed config printed as a tree."""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

# the groups a reader looks for first; the rest follow in the config's own order
FIRST = ("data", "model", "weights", "train_augment", "augment", "trainer", "callbacks", "logger")


def apply_extras(cfg: DictConfig) -> None:
    """What `extras.*` asks for before a run starts."""
    if cfg.get("extras") and cfg.extras.get("print_config"):
        print_config_tree(cfg)


def print_config_tree(cfg: DictConfig) -> None:
    """The composed config as a rich tree, one branch per group, values resolved where they can be (a
    required value still missing, `???`, is shown as such rather than failing here: check_config names it)."""
    from rich import print as rich_print
    from rich.syntax import Syntax
    from rich.tree import Tree

    tree = Tree("config", style="bold", guide_style="dim")
    keys = [k for k in FIRST if k in cfg] + [k for k in cfg if k not in FIRST]
    for key in keys:
        node = cfg[key] if OmegaConf.is_config(cfg[key]) else None
        branch = tree.add(str(key), style="bold")
        if node is None:
            branch.add(Syntax(f"{cfg[key]}", "yaml", background_color="default"))
            continue
        try:
            text = OmegaConf.to_yaml(node, resolve=True)
        except Exception:  # an unresolvable interpolation or missing value: show it as written
            text = OmegaConf.to_yaml(node)
        branch.add(Syntax(text, "yaml", background_color="default"))
    rich_print(tree)
