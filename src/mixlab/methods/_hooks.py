"""Forward hooks for the methods that reach inside a network (ManifoldMix, AutoMix).

A hook is registered for one call and removed when the call ends, even if it
raises, so the model is left exactly as it was handed over: a plain `model(x)`
afterwards runs unhooked. Nothing here edits a model.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from torch import Tensor, nn


class _StopForward(Exception):
    """Raised by a capturing hook to end a forward pass once the feature is in hand."""


def find_module(model: nn.Module, name: str, *, argname: str) -> nn.Module:
    """The submodule of `model` called `name` (as `named_modules()` spells it).

    Raises:
        ValueError: naming `argname`, the unknown name and some of the valid ones.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"{argname}: expected a submodule name such as 'layer3', got {name!r}")
    modules = dict(model.named_modules())
    if name not in modules:
        raise ValueError(
            f"{argname}: {type(model).__name__} has no submodule {name!r}; "
            f"available: {module_names_hint(model)}"
        )
    return modules[name]


def module_names_hint(model: nn.Module, limit: int = 16) -> str:
    """A short list of a model's submodule names for error messages: the top-level
    children first (where stages live), then deeper names, up to `limit`."""
    names = [n for n, _ in model.named_modules() if n]
    top = [n for n in names if "." not in n]
    rest = [n for n in names if "." in n]
    shown = (top + rest)[:limit]
    more = len(names) - len(shown)
    return ", ".join(repr(n) for n in shown) + (f", ... ({more} more)" if more > 0 else "")


@contextmanager
def replace_output(module: nn.Module, fn: Callable[[Tensor], Tensor]) -> Iterator[None]:
    """While the context is open, the first output of `module` is replaced by `fn(output)`.

    Later calls of the same module in the same forward pass (a shared block) are
    left alone, so a batch is changed at one place only.
    """
    fired = False

    def hook(mod: nn.Module, args: tuple, output: object) -> Tensor | None:
        nonlocal fired
        if fired:
            return None
        fired = True
        if not isinstance(output, Tensor):
            raise TypeError(
                f"{type(mod).__name__} returns {type(output).__name__}; mixing inside the "
                f"network needs a submodule whose output is one tensor"
            )
        return fn(output)

    handle = module.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def capture_output(model: nn.Module, module: nn.Module, x: Tensor, *, stop: bool = True) -> object:
    """Run `model(x)` and return what `module` output during it (its first call).

    Args:
        stop: end the forward pass as soon as the output is captured (an exception
            raised by the hook and caught here), so the layers after it cost nothing.

    Raises:
        RuntimeError: if the forward pass never called `module`.
    """
    captured: list[object] = []

    def hook(mod: nn.Module, args: tuple, output: object) -> None:
        if not captured:
            captured.append(output)
            if stop:
                raise _StopForward

    handle = module.register_forward_hook(hook)
    try:
        model(x)
    except _StopForward:
        pass
    finally:
        handle.remove()
    if not captured:
        raise RuntimeError(f"the forward pass of {type(model).__name__} never called the module")
    return captured[0]
