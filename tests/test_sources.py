"""Source strings → Service instances, and the messages people see when a source is wrong."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

from fermion import Service
from fermion.sources import ADAPTERS, SourceError, load_service, split_source

APPS = Path(__file__).resolve().parent / "apps"


@pytest.fixture(autouse=True)
def isolated_imports(monkeypatch):
    """Loading a file puts its folder on sys.path and its module in sys.modules; undo both."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    before = set(sys.modules)
    yield
    for name in set(sys.modules) - before:
        if name.startswith(("fermion_user_", "unit_")):
            del sys.modules[name]


@pytest.fixture
def workdir(tmp_path, monkeypatch) -> Path:
    """An empty project folder that is also the current directory, like `cd project && fermion serve`."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write(folder: Path, name: str, source: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(source))
    return path


def load_error(source: str) -> str:
    with pytest.raises(SourceError) as info:
        load_service(source)
    return str(info.value)


ECHO = textwrap.dedent(
    """
    from fermion import Service, endpoint

    class Echo(Service):
        @endpoint
        def echo(self, text: str) -> str:
            return text
    """
)


# --- Sources that load ------------------------------------------------------------------------


def test_a_file_with_one_service_needs_no_class_name():
    service = load_service(str(APPS / "unit_echo.py"))
    assert isinstance(service, Service)
    assert type(service).__name__ == "Echo"
    assert [e.name for e in service.endpoints()] == ["echo"]


def test_a_class_can_be_named(monkeypatch):
    monkeypatch.chdir(APPS)
    assert type(load_service("unit_two_services.py:Second")).__name__ == "Second"


def test_py_prefix_is_the_same_as_a_plain_path():
    service = load_service(f"py:{APPS / 'unit_echo.py'}:Echo")
    assert type(service).__name__ == "Echo"


def test_surrounding_whitespace_is_ignored(monkeypatch):
    monkeypatch.chdir(APPS)
    assert type(load_service("  unit_echo.py:Echo\n")).__name__ == "Echo"


def test_a_file_can_import_its_neighbours(workdir):
    write(workdir, "unit_prompts.py", "GREETING = 'hello, '\n")
    write(
        workdir,
        "app.py",
        """
        from unit_prompts import GREETING

        from fermion import Service, endpoint

        class Greeter(Service):
            @endpoint
            def greet(self, name: str) -> str:
                return GREETING + name
        """,
    )
    service = load_service("app.py")
    assert service.greet("Ada") == "hello, Ada"  # type: ignore[attr-defined]


def test_file_names_with_dashes_load(workdir):
    write(workdir, "my-app.py", ECHO)
    assert type(load_service("my-app.py:Echo")).__name__ == "Echo"


def test_services_imported_from_elsewhere_are_not_candidates(workdir):
    write(workdir, "unit_base_app.py", ECHO)
    write(
        workdir,
        "app.py",
        """
        from unit_base_app import Echo  # imported, so not this file's Service

        from fermion import endpoint

        class LoudEcho(Echo):
            @endpoint
            def shout(self, text: str) -> str:
                return text.upper()
        """,
    )
    service = load_service("app.py")
    assert type(service).__name__ == "LoudEcho"
    assert [e.name for e in service.endpoints()] == ["echo", "shout"]


def test_a_module_level_instance_is_served_as_is(workdir):
    write(workdir, "app.py", ECHO + "\nservice = Echo()\n")
    service = load_service("app.py:service")
    assert service is sys.modules["fermion_user_app"].service


def test_package_module_and_class(tmp_path, monkeypatch):
    write(tmp_path, "unit_pkg_ok/__init__.py", "")
    write(tmp_path, "unit_pkg_ok/models.py", ECHO)
    monkeypatch.syspath_prepend(str(tmp_path))
    assert type(load_service("unit_pkg_ok.models:Echo")).__name__ == "Echo"
    assert type(load_service("unit_pkg_ok.models")).__name__ == "Echo"


# --- Split ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("app.py:Echo", ("py", "app.py:Echo")),
        ("py:app.py:Echo", ("py", "app.py:Echo")),
        ("pkg.models:Echo", ("py", "pkg.models:Echo")),
        ("st:all-MiniLM-L6-v2", ("st", "all-MiniLM-L6-v2")),
        ("hf:org/model", ("hf", "org/model")),
        ("unknown:thing", ("py", "unknown:thing")),
    ],
)
def test_split_source(source, expected):
    assert split_source(source) == expected


# --- Messages for sources that do not load ----------------------------------------------------


@pytest.mark.parametrize("source", ["", "   "])
def test_empty_source(source):
    assert load_error(source).startswith("empty source: give a Python file (app.py:MyService)")


def test_missing_file(workdir):
    assert load_error("app.py") == f"no file 'app.py' (looked in {workdir})"
    assert load_error("py:app.py:Echo") == f"no file 'app.py' (looked in {workdir})"


def test_missing_suffix_is_suggested_for_a_path(workdir):
    write(workdir, "app.py", ECHO)
    assert load_error("./app:Echo").endswith("did you mean './app.py'?")


def test_a_module_in_the_current_folder_loads_like_python_m(workdir):
    write(workdir, "unit_suffixless.py", ECHO)
    assert type(load_service("unit_suffixless:Echo")).__name__ == "Echo"


def test_unknown_module(workdir):
    message = load_error("unit_no_such_module:Echo")
    assert message.startswith("no Python file or module named 'unit_no_such_module'")
    assert "app.py:MyService" in message
    assert "no Python file or module named 'unit_no_such_pkg.models'" in load_error("unit_no_such_pkg.models:Echo")


def test_a_folder_by_bare_name(workdir):
    (workdir / "unit_models_dir").mkdir()
    assert load_error("unit_models_dir") == (
        "'unit_models_dir' is a folder, not a Python file or module; point at the .py file inside it"
    )


@pytest.mark.parametrize("form", ["{name}/", "./{name}", "{abs}"])
def test_a_folder_by_path(workdir, form):
    folder = workdir / "unit_models_dir"
    folder.mkdir()
    source = form.format(name=folder.name, abs=folder)
    assert "is a folder" in load_error(source)


def test_a_folder_when_the_current_directory_is_importable(workdir, monkeypatch):
    (workdir / "unit_models_ns").mkdir()
    monkeypatch.syspath_prepend(str(workdir))
    assert "is a folder" in load_error("unit_models_ns")


def test_no_service_in_the_file(workdir):
    write(workdir, "app.py", "def predict(text: str) -> str:\n    return text\n")
    assert load_error("app.py") == ("app.py defines no Service; write `class MyService(fermion.Service)` with @endpoint methods")


def test_several_services_need_a_class_name(monkeypatch):
    monkeypatch.chdir(APPS)
    assert load_error("unit_two_services.py") == (
        "unit_two_services.py defines several Services (First, Second); pick one: unit_two_services.py:First"
    )


def test_wrong_class_name_suggests_the_closest(monkeypatch):
    monkeypatch.chdir(APPS)
    assert load_error("unit_echo.py:Ech") == "no class 'Ech' in unit_echo.py; did you mean 'Echo'?"


def test_wrong_class_name_without_a_close_match_lists_the_services(monkeypatch):
    monkeypatch.chdir(APPS)
    assert load_error("unit_two_services.py:Zebra") == "no class 'Zebra' in unit_two_services.py; it has: First, Second"


def test_syntax_error_points_at_file_and_line(workdir):
    write(workdir, "app.py", "from fermion import Service\n\nclass Echo(Service)\n    pass\n")
    message = load_error("app.py")
    assert message.startswith("syntax error in ")
    assert "app.py:3: " in message


def test_import_error_inside_the_file(workdir):
    write(workdir, "app.py", "import unit_not_installed_anywhere\n" + ECHO)
    assert load_error("app.py:Echo") == (
        "app.py failed to import: ModuleNotFoundError: No module named 'unit_not_installed_anywhere'"
    )


def test_exception_at_import_time(workdir):
    write(workdir, "app.py", "SETTINGS = {}\nMODEL = SETTINGS['model']\n")
    assert load_error("app.py") == "app.py failed to import: KeyError: 'model'"


def test_import_error_inside_a_package_module(tmp_path, monkeypatch):
    write(tmp_path, "unit_pkg_broken/__init__.py", "")
    write(tmp_path, "unit_pkg_broken/models.py", "import unit_not_installed_anywhere\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert load_error("unit_pkg_broken.models:Echo") == (
        "unit_pkg_broken.models failed to import: ModuleNotFoundError: No module named 'unit_not_installed_anywhere'"
    )


def test_definition_error_when_the_class_is_created(workdir):
    write(
        workdir,
        "app.py",
        """
        from fermion import Service, endpoint

        class Bad(Service):
            @endpoint(path="/healthz")
            def health(self) -> str:
                return "ok"
        """,
    )
    message = load_error("app.py")
    assert message.startswith("app.py: Bad.health: path '/healthz' is reserved by the server")


def test_definition_error_in_a_signature_surfaces_at_load_time(workdir):
    write(
        workdir,
        "app.py",
        """
        from fermion import Service, endpoint

        class Embedder(Service):
            @endpoint(max_batch_size=8)
            def embed(self, text: str) -> list[float]:
                return []
        """,
    )
    message = load_error("app.py")
    assert message.startswith("app.py: endpoint 'embed' is batched (max_batch_size=8)")
    assert "`text: list[...]`" in message


def test_attribute_that_is_not_a_service(monkeypatch):
    monkeypatch.chdir(APPS)
    assert load_error("unit_echo.py:shout") == "'shout' in unit_echo.py is not a fermion.Service subclass"


def test_service_without_endpoints(workdir):
    write(
        workdir,
        "app.py",
        """
        from fermion import Service

        class Empty(Service):
            def predict(self, text: str) -> str:
                return text
        """,
    )
    assert load_error("app.py") == "app.py:Empty has no endpoints; decorate methods with @endpoint"


def test_constructor_that_raises(workdir):
    write(
        workdir,
        "app.py",
        ECHO
        + textwrap.dedent(
            """
            class NeedsGPU(Echo):
                def __init__(self) -> None:
                    raise RuntimeError("no GPU found")
            """
        ),
    )
    assert load_error("app.py:NeedsGPU") == "creating NeedsGPU() failed: RuntimeError: no GPU found"


def test_model_kinds_are_routed_to_their_adapters():
    assert set(ADAPTERS) == {"st", "hf", "vllm", "sklearn", "onnx", "model"}
    assert all(target.startswith("fermion.models.") for target in ADAPTERS.values())
