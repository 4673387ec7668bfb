"""Reading `sklearn:` model files safely: skops with a short list of trusted types, pickle only when trusted."""

from __future__ import annotations

import importlib
import inspect
import os
from pathlib import Path
from typing import Any

from fermion.models._tabular import listing
from fermion.models.kinds import SourceError

SKOPS_SUFFIXES = (".skops",)
PICKLE_SUFFIXES = (".joblib", ".pkl", ".pickle")


def model_file(found: str, name: str) -> str:
    """The model file itself, also when `found` is a folder holding exactly one model file."""
    if not os.path.isdir(found):
        return found
    suffixes = SKOPS_SUFFIXES + PICKLE_SUFFIXES
    candidates = sorted(p for p in os.listdir(found) if p.lower().endswith(suffixes))
    skops = [p for p in candidates if p.lower().endswith(SKOPS_SUFFIXES)]
    chosen = skops if len(skops) == 1 else candidates
    if len(chosen) != 1:
        what = f"several ({listing(candidates)})" if chosen else "no .skops/.joblib/.pkl file"
        raise SourceError(
            f"sklearn:{name} is a folder with {what}; point at the model file: sklearn:{name.rstrip('/')}/model.skops"
        )
    return os.path.join(found, chosen[0])


def read_model(
    path: str, name: str, trust_pickle: bool, also_trusted: frozenset[str] = frozenset(), kind: str = "sklearn"
) -> Any:
    """Load the estimator, refusing pickles and unknown skops types unless `trust_pickle` (or named in `also_trusted`)."""
    suffix = Path(path).suffix.lower()
    if suffix in PICKLE_SUFFIXES:
        if not trust_pickle:
            raise SourceError(
                f"{kind}:{name} is a pickle file, and loading a pickle runs any code it contains; "
                f'convert it once where you trust it: python -c "import joblib, skops.io; '
                f"skops.io.dump(joblib.load('{path}'), 'model.skops')\" and serve sklearn:model.skops "
                "(or pass --trust-pickle if you trust whoever made the file)"
            )
        import joblib

        return _guarded(lambda: joblib.load(path), f"{kind}:{name}", "unpickling it")
    if suffix not in SKOPS_SUFFIXES:
        raise SourceError(
            f"{kind}:{name}: expected a .skops file (or .joblib/.pkl/.pickle with --trust-pickle), got '{Path(path).name}'; "
            "save models with skops.io.dump(model, 'model.skops')"
        )
    import skops.io as sio

    try:
        untrusted = sio.get_untrusted_types(file=path)
    except Exception as exc:
        raise SourceError(
            f"{kind}:{name} is not a readable skops file ({type(exc).__name__}: {exc}); save models with skops.io.dump(model, 'model.skops')"
        ) from None
    refused = [t for t in untrusted if t not in also_trusted and not _is_safe_type(t)]
    if refused and not trust_pickle:
        raise SourceError(
            f"{kind}:{name} contains types Fermion does not trust by itself: {listing(refused)}; "
            "they could run code when the model is used. Check them (skops.io.get_untrusted_types(file=...)) "
            "and pass --trust-pickle if you trust whoever made the file"
        )
    return _guarded(lambda: sio.load(path, trusted=untrusted), f"{kind}:{name}", "loading it")


def _guarded(read: Any, label: str, doing: str) -> Any:
    try:
        return read()
    except ModuleNotFoundError as exc:
        raise SourceError(
            f"{label} needs the module '{exc.name}', which is not installed; pip install the package that provides it"
        ) from None
    except Exception as exc:
        raise SourceError(f"{label}: {doing} failed: {type(exc).__name__}: {exc}") from None


def _is_safe_type(qualified: str) -> bool:
    """Whether a type a skops file names may be loaded without `--trust-pickle`.

    Trusted: classes defined by scikit-learn itself (their own state-restoring code runs,
    nothing else; skops leaves some out, such as `sklearn.tree._tree.Tree`) and numpy ufuncs
    (pure arithmetic, for example `FunctionTransformer(np.log1p)`). Not trusted: every other
    function (a function stored in a model is called with request data) and other packages' types.
    """
    module_name, _, attr = qualified.rpartition(".")
    if module_name == "numpy":
        import numpy

        return isinstance(getattr(numpy, attr, None), numpy.ufunc)
    if module_name != "sklearn" and not module_name.startswith("sklearn."):
        return False
    try:
        found = getattr(importlib.import_module(module_name), attr, None)
    except Exception:
        return False
    return inspect.isclass(found) and (found.__module__ or "").startswith("sklearn.")
