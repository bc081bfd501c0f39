"""The names of the methods, readable without importing them (importing a method imports
torch): the command line's help lists and argument checks use this table, the registry in
``zsad.methods`` is the truth (a test keeps the two equal)."""
from __future__ import annotations

# Installed plugins name their method module in this entry-point group (the entry point's
# name is the method's name).
ENTRY_POINT_GROUP = "zsad.methods"

# The methods bundled under zsad/methods: name -> whether it has trainable parameters.
BUILTIN_METHODS: dict[str, bool] = {
    "moeclip": True,
    "musc": False,
    "promptmoe": True,
    "wmoeclip": True,
    "zeroshot": False,
}
# The bundled methods that score a set of images of one product against each other
# (transductive, ``scores_sets``): `zsad predict`/`test` score them per set, and the
# entry points that see one image at a time refuse them.
SET_METHODS: tuple[str, ...] = ("musc",)


def plugin_method_names() -> list[str]:
    """The methods installed plugins announce (their entry points' names), not imported."""
    from importlib.metadata import entry_points  # only when a help page lists them

    return sorted({entry.name for entry in entry_points(group=ENTRY_POINT_GROUP)} - set(BUILTIN_METHODS))


def methods_help() -> str:
    """Every method for a help text, the training-free ones marked."""
    bundled = [
        name if trainable else f"{name} (training-free{', scores sets' if name in SET_METHODS else ''})"
        for name, trainable in sorted(BUILTIN_METHODS.items())
    ]
    return ", ".join(bundled + [f"{name} (plugin)" for name in plugin_method_names()])


def trainable_methods_help() -> str:
    """The methods `zsad train` can train, for a help text (plugins are listed unchecked)."""
    bundled = [name for name, trainable in sorted(BUILTIN_METHODS.items()) if trainable]
    return ", ".join(bundled + [f"{name} (plugin)" for name in plugin_method_names()])


def training_free_methods_help() -> str:
    """The bundled methods that need no training, for a help text."""
    return ", ".join(name for name, trainable in sorted(BUILTIN_METHODS.items()) if not trainable)


def set_methods_help() -> str:
    """The bundled set methods, for a help text."""
    return ", ".join(SET_METHODS)
