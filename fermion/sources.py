"""Source strings → a Service instance: `app.py:Echo`, `py:app.py`, `pkg.module:Echo`, `st:...`, `hf:...`.

Model sources go to their adapter in `fermion.models` (see `fermion.models.kinds`); Python files
and modules are imported here. Every failure is a `SourceError` whose message says what is wrong
and what to do next.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import os
import sys
from typing import Any

from fermion.models.kinds import ADAPTERS, EXTRAS, REQUIRED_MODULES, SourceError, missing_extra_message, split_source
from fermion.service import DefinitionError, Service

__all__ = ["ADAPTERS", "EXTRAS", "REQUIRED_MODULES", "SourceError", "load_service", "missing_extra_message", "split_source"]


def load_service(source: str, options: dict[str, Any] | None = None) -> Service:
    """Turn a source string into a ready-to-setup Service instance.

    `options` are source-kind specific settings from the command line (for example
    `{"task": "fill-mask"}` for `hf:` or `{"trust_pickle": True}` for `sklearn:`).
    """
    if not source or not source.strip():
        raise SourceError("empty source: give a Python file (app.py:MyService) or a model source (st:, hf:, ...)")
    scheme, rest = split_source(source.strip())
    options = {k: v for k, v in (options or {}).items() if v is not None and v is not False}
    if scheme != "py":
        missing = _missing_module(REQUIRED_MODULES.get(scheme, ()))
        if missing is not None:
            raise SourceError(missing_extra_message(scheme, ModuleNotFoundError(name=missing)))
        module_name, _, func_name = ADAPTERS[scheme].partition(":")
        try:
            return getattr(importlib.import_module(module_name), func_name)(rest, **options)
        except ModuleNotFoundError as exc:
            if (exc.name or "").startswith("fermion."):
                raise SourceError(f"the '{scheme}:' source kind is not available in Fermion {_version()} yet") from None
            raise SourceError(missing_extra_message(scheme, exc)) from None
    if options:
        raise SourceError(
            f"option(s) {', '.join('--' + k.replace('_', '-') for k in options)} apply to model sources, not to Python files"
        )
    return _load_python(rest)


def _missing_module(names: tuple[str, ...]) -> str | None:
    """The first of `names` that cannot be imported here (checked without importing it)."""
    for name in names:
        try:
            if importlib.util.find_spec(name) is None:
                return name
        except (ImportError, ValueError):  # ValueError: blocked in sys.modules
            return name
    return None


def _split_target(target: str) -> tuple[str, str | None]:
    # "app.py:Echo", "pkg.mod:Echo", "C:\\x\\app.py:Echo" (drive letters are not our concern on POSIX)
    if ":" in target:
        location, _, attr = target.rpartition(":")
        return location, attr or None
    return target, None


def _load_python(target: str) -> Service:
    location, attr = _split_target(target)
    if os.path.isdir(location) and not os.path.isfile(os.path.join(location, "__init__.py")):
        raise SourceError(f"'{location}' is a folder, not a Python file or module; point at the .py file inside it")
    if location.endswith(".py") or os.sep in location or os.path.isfile(location):
        module, where = _import_file(location), location
    else:
        module, where = _import_module(location), location
    return _pick(module, attr, where)


def _import_file(path: str) -> Any:
    full = os.path.abspath(path)
    if not os.path.isfile(full):
        hint = ""
        if not path.endswith(".py") and os.path.isfile(full + ".py"):
            hint = f"; did you mean '{path}.py'?"
        raise SourceError(f"no file '{path}' (looked in {os.getcwd()}){hint}")
    folder = os.path.dirname(full)
    if folder not in sys.path:
        sys.path.insert(0, folder)  # so the file can import its neighbours
    name = "fermion_user_" + os.path.splitext(os.path.basename(full))[0].replace("-", "_").replace(".", "_")
    spec = importlib.util.spec_from_file_location(name, full)
    if spec is None or spec.loader is None:
        raise SourceError(f"cannot load '{path}' as Python source")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    _exec(lambda: spec.loader.exec_module(module), path)  # type: ignore[union-attr]
    return module


def _import_module(name: str) -> Any:
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())  # like `python -m`: modules in the current folder are found
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        spec = None
    if spec is None:
        raise SourceError(
            f"no Python file or module named '{name}'; give a path like app.py:MyService or a module like package.module:MyService"
        )
    return _exec(lambda: importlib.import_module(name), name)


def _exec(run: Any, where: str) -> Any:
    try:
        return run()
    except SyntaxError as exc:
        location = f"{exc.filename or where}:{exc.lineno}" if exc.lineno else where
        raise SourceError(f"syntax error in {location}: {exc.msg}") from None
    except DefinitionError as exc:
        raise SourceError(f"{where}: {exc}") from None
    except Exception as exc:
        raise SourceError(f"{where} failed to import: {type(exc).__name__}: {exc}") from None


def _services_in(module: Any) -> list[str]:
    return [
        name
        for name, value in vars(module).items()
        if isinstance(value, type) and issubclass(value, Service) and value is not Service and value.__module__ == module.__name__
    ]


def _pick(module: Any, attr: str | None, where: str) -> Service:
    if attr is None:
        found = _services_in(module)
        if not found:
            raise SourceError(f"{where} defines no Service; write `class MyService(fermion.Service)` with @endpoint methods")
        if len(found) > 1:
            raise SourceError(f"{where} defines several Services ({', '.join(found)}); pick one: {where}:{found[0]}")
        attr = found[0]
    if not hasattr(module, attr):
        candidates = _services_in(module) or [n for n in vars(module) if not n.startswith("_")]
        close = difflib.get_close_matches(attr, candidates, n=1, cutoff=0.5)
        hint = f"; did you mean '{close[0]}'?" if close else (f"; it has: {', '.join(candidates)}" if candidates else "")
        raise SourceError(f"no class '{attr}' in {where}{hint}")
    value = getattr(module, attr)
    if isinstance(value, Service):
        return value
    if not (isinstance(value, type) and issubclass(value, Service)):
        raise SourceError(f"'{attr}' in {where} is not a fermion.Service subclass")
    try:
        for ep in value.endpoints():
            ep.schema  # noqa: B018 - build schemas now so definition errors surface at load time
    except DefinitionError as exc:
        raise SourceError(f"{where}: {exc}") from None
    if not value.endpoints():
        raise SourceError(f"{where}:{attr} has no endpoints; decorate methods with @endpoint")
    try:
        return value()
    except Exception as exc:
        raise SourceError(f"creating {attr}() failed: {type(exc).__name__}: {exc}") from None


def _version() -> str:
    from fermion._version import __version__

    return __version__
