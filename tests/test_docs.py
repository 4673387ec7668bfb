"""The documentation's examples are real: Service blocks load, commands exist, links resolve, examples run.

What this test reads in README.md and docs/*.md, and so what those pages may rely on:

- A ```python block that defines `class X(Service)` is a whole file: it loads with
  `fermion.sources.load_service` and yields an OpenAPI document. A block with a line
  `# fermion serve fails: <message>` must fail to load, with that message.
- In ```bash / ```console / ```shell blocks, `fermion serve examples/...` names a real example and
  every `fermion <subcommand>` is a real subcommand (so is every inline `fermion <subcommand>` in
  docs/; the README's prose may name planned commands).
- In a ```console block a line starting with `$ ` is a command and the lines up to the next command
  are its output; `…` in an output line stands for any text. A `curl` or `fermion call` command
  that shows output, on a page with a Service block above it, is run against the last such block, served over real HTTP (by a
  `fermion serve` process for docs/getting-started.md, by the same app in this process elsewhere,
  to keep this test fast), with http://127.0.0.1:8000 replaced by the server's URL and that block
  saved as app.py in the working directory.
- A ```python block that makes a `Client(` or `AsyncClient(` for http://127.0.0.1:8000, below a
  Service block, is a client example: it runs against the same server, and a ```text block right
  after it is its exact output. (Commands and code with no Service block above them — say, for a
  model source — are not run.)
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import io
import re
import shlex
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import pytest
from support import FERMION, ROOT, running_server, wait_ready

from fermion.serving.openapi import build_openapi
from fermion.sources import SourceError, load_service

DOCS = ROOT / "docs"
README = ROOT / "README.md"
PAGES = sorted(DOCS.rglob("*.md")) + ([README] if README.is_file() else [])
DOC_URL = "http://127.0.0.1:8000"
#: Pages whose examples run against a real `fermion serve` process, as a user would run them.
REAL_PROCESS_PAGES = {"getting-started.md"}

SHELL_LANGS = {"bash", "sh", "shell", "console", "zsh"}
PYTHON_LANGS = {"python", "py", "python3"}
SERVICE_CLASS = re.compile(r"^class\s+(\w+)\((?:fermion\.)?Service\)\s*:", re.MULTILINE)
EXPECTED_FAILURE = re.compile(r"^# fermion serve fails: (.+)$", re.MULTILINE)
FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})\s*([\w+-]*)")
SHELL_OPERATORS = {"&&", "||", ";", "|", "&", "(", ")"}


# -- reading the pages ------------------------------------------------------------------------


@dataclass(frozen=True)
class Block:
    """One fenced code block: where it opens, its language and its text."""

    page: Path
    line: int
    lang: str
    text: str

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


@dataclass
class Page:
    """A markdown page split into code blocks and prose (everything outside the blocks)."""

    path: Path
    blocks: list[Block] = field(default_factory=list)
    prose: list[tuple[int, str]] = field(default_factory=list)


def read_page(path: Path) -> Page:
    page = Page(path)
    lines = path.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if not opening:
            page.prose.append((i + 1, lines[i]))
            i += 1
            continue
        fence, lang = opening.group(1), opening.group(2).lower()
        closing = re.compile(rf"^ {{0,3}}{re.escape(fence[0])}{{{len(fence)},}}\s*$")
        body: list[str] = []
        j = i + 1
        while j < len(lines) and not closing.match(lines[j]):
            body.append(lines[j])
            j += 1
        page.blocks.append(Block(path, i + 1, lang, "\n".join(body) + "\n"))
        i = j + 1
    return page


READ = [read_page(path) for path in PAGES]


def is_service_block(block: Block) -> bool:
    return block.lang in PYTHON_LANGS and bool(SERVICE_CLASS.search(block.text))


def shell_commands(block: Block) -> Iterator[tuple[str, list[str]]]:
    """(command, output lines) of a shell block; only console blocks show output."""
    lines = block.text.splitlines()
    if block.lang == "console":
        index = 0
        while index < len(lines):
            if not lines[index].startswith("$ "):
                index += 1
                continue
            command, index = lines[index][2:], index + 1
            output: list[str] = []
            while index < len(lines) and not lines[index].startswith("$ "):
                output.append(lines[index])
                index += 1
            while output and not output[-1].strip():
                output.pop()
            yield command, output
        return
    pending = ""
    for line in lines:
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        command, pending = pending + line, ""
        if command.strip() and not command.lstrip().startswith("#"):
            yield command, []


def words(command: str) -> list[list[str]]:
    """The simple commands of a shell line, as word lists, without leading VAR=value assignments."""
    lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    lexer.commenters = "#"
    simple: list[list[str]] = [[]]
    for token in lexer:
        if token in SHELL_OPERATORS:
            simple.append([])
        else:
            simple[-1].append(token)
    result = []
    for argv in simple:
        while argv and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", argv[0]):
            argv = argv[1:]
        if argv:
            result.append(argv)
    return result


def fermion_args(argv: list[str]) -> list[str] | None:
    """The arguments after `fermion` (or `python -m fermion`), or None for another program."""
    if argv[0] == "fermion":
        return argv[1:]
    if len(argv) >= 3 and argv[0].startswith("python") and argv[1:3] == ["-m", "fermion"]:
        return argv[3:]
    return None


SERVICE_BLOCKS = [block for page in READ for block in page.blocks if is_service_block(block)]
SHELL_BLOCKS = [block for page in READ for block in page.blocks if block.lang in SHELL_LANGS]


@pytest.fixture()
def isolated_imports(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Loading a file puts its folder on sys.path and its module in sys.modules: undo both."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    before = set(sys.modules)
    yield
    for name in set(sys.modules) - before:
        if name.startswith("fermion_user_"):
            del sys.modules[name]


# -- (1) every Service block loads and describes itself ----------------------------------------


def test_the_docs_exist_and_show_services():
    assert {"getting-started.md", "services.md", "client.md", "configuration.md"} <= {p.name for p in DOCS.glob("*.md")}
    assert SERVICE_BLOCKS, "no ```python block defines a Service"


@pytest.mark.parametrize("block", SERVICE_BLOCKS, ids=lambda b: b.where)
def test_service_block_loads_and_builds_openapi(block: Block, tmp_path: Path, isolated_imports: None):
    app = tmp_path / "app.py"
    app.write_text(block.text, encoding="utf-8")
    failure = EXPECTED_FAILURE.search(block.text)
    if failure:
        with pytest.raises(SourceError) as raised:
            load_service(str(app))
        assert failure.group(1).strip() in str(raised.value), f"{block.where}: {raised.value}"
        return
    for name in SERVICE_CLASS.findall(block.text):
        service = load_service(f"{app}:{name}")
        document = build_openapi(service)
        orjson.dumps(document)  # plain JSON all the way down
        operations = {op["operationId"] for ops in document["paths"].values() for op in ops.values() if "operationId" in op}
        assert operations == {ep.name for ep in type(service).endpoints()}, block.where


# -- (2) `fermion serve examples/...` names a real example -------------------------------------


def _served_examples() -> list[tuple[str, str]]:
    found = []
    for block in SHELL_BLOCKS:
        for command, _ in shell_commands(block):
            for argv in words(command):
                args = fermion_args(argv)
                if not args or args[0] != "serve":
                    continue
                source = next((a for a in args[1:] if not a.startswith("-")), "")
                source = source.removeprefix("py:")
                if source.startswith("examples/"):
                    found.append((block.where, source))
    return found


SERVED_EXAMPLES = _served_examples()


def test_docs_serve_some_examples():
    assert SERVED_EXAMPLES, "no `fermion serve examples/...` command in the docs' shell blocks"


@pytest.mark.parametrize(("where", "source"), SERVED_EXAMPLES, ids=[f"{w}:{s}" for w, s in SERVED_EXAMPLES])
def test_served_example_exists_and_loads(where: str, source: str, isolated_imports: None):
    location = source.split(".py:", 1)[0] + ".py" if ".py:" in source else source
    assert (ROOT / location).is_file(), f"{where}: `fermion serve {source}` names a missing file"
    load_service(str(ROOT / source))


# -- (3) every `fermion <subcommand>` exists ----------------------------------------------------


def _subcommands() -> dict[str, str]:
    found: dict[str, str] = {}
    for block in SHELL_BLOCKS:
        for command, _ in shell_commands(block):
            for argv in words(command):
                args = fermion_args(argv)
                if args and not args[0].startswith("-"):
                    found.setdefault(args[0], block.where)
    for page in READ:
        if page.path.parent != DOCS:
            continue
        for number, line in page.prose:
            for span in re.findall(r"`([^`]+)`", line):
                match = re.match(r"^(?:python -m )?fermion ([a-z][\w-]*)", span)
                if match:
                    found.setdefault(match.group(1), f"{page.path.relative_to(ROOT)}:{number}")
    return found


SUBCOMMANDS = _subcommands()


def test_documented_subcommands_exist():
    assert {"serve", "call"} <= set(SUBCOMMANDS)

    def help_of(sub: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*FERMION, sub, "--help"], capture_output=True, text=True, timeout=60, cwd=ROOT)

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        results = dict(zip(SUBCOMMANDS, pool.map(help_of, SUBCOMMANDS), strict=True))
    missing = {f"fermion {sub} ({SUBCOMMANDS[sub]})": r.stderr.strip()[-200:] for sub, r in results.items() if r.returncode != 0}
    assert not missing, f"documented subcommands that do not exist: {missing}"


# -- (4) relative links resolve -----------------------------------------------------------------

LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+\"[^\"]*\")?\s*$")


def heading_anchors(page: Page) -> set[str]:
    """GitHub's anchors for the page's headings."""
    anchors: set[str] = set()
    counts: dict[str, int] = {}
    for _, line in page.prose:
        match = re.match(r"^ {0,3}#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not match:
            continue
        text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", match.group(1)).strip().lower()
        slug = re.sub(r"[^\w\- ]", "", text).replace(" ", "-")
        seen = counts.get(slug, 0)
        counts[slug] = seen + 1
        anchors.add(slug if seen == 0 else f"{slug}-{seen}")
    return anchors


def _links() -> list[tuple[str, Page, str]]:
    found = []
    for page in READ:
        for number, line in page.prose:
            outside_code = re.sub(r"`[^`]*`", "", line)
            targets = LINK.findall(outside_code) + REFERENCE.findall(outside_code)
            found += [(f"{page.path.relative_to(ROOT)}:{number}", page, target) for target in targets]
    return found


LINKS = [link for link in _links() if not re.match(r"^[a-z][a-z0-9+.-]*:", link[2], re.IGNORECASE)]


@pytest.mark.parametrize(("where", "page", "target"), LINKS, ids=[f"{w}:{t}" for w, _, t in LINKS])
def test_relative_link_resolves(where: str, page: Page, target: str):
    path_part, _, fragment = target.partition("#")
    resolved = (page.path.parent / path_part).resolve() if path_part else page.path
    assert resolved.exists(), f"{where}: link to {target!r}, but {resolved} does not exist"
    if fragment and resolved.suffix == ".md":
        anchors = heading_anchors(read_page(resolved))
        assert fragment in anchors, f"{where}: no heading for #{fragment} in {resolved.name}; it has {sorted(anchors)}"


# -- (5) the examples run against real servers ----------------------------------------------------


@dataclass(frozen=True)
class Example:
    """A console command with its output, or a client block with its output (None: unchecked)."""

    where: str
    service: Block = field(repr=False)
    kind: str  # "curl", "call" or "python"
    code: str
    expected: str | None


def _examples() -> list[Example]:
    found: list[Example] = []
    for page in READ:
        service: Block | None = None
        for index, block in enumerate(page.blocks):
            if is_service_block(block):
                if not EXPECTED_FAILURE.search(block.text):
                    service = block
                continue
            if service is None:
                continue
            if block.lang == "console":
                for command, output in shell_commands(block):
                    argv = words(command)
                    if not output or len(argv) != 1:
                        continue
                    args = fermion_args(argv[0])
                    kind = "curl" if argv[0][0] == "curl" else "call" if args and args[0] == "call" else None
                    if kind is None:
                        continue
                    found.append(Example(block.where, service, kind, command, "\n".join(output)))
            elif block.lang in PYTHON_LANGS and re.search(rf"\b(?:Async)?Client\(\s*\"{re.escape(DOC_URL)}\"", block.text):
                following = page.blocks[index + 1] if index + 1 < len(page.blocks) else None
                expected = following.text if following is not None and following.lang == "text" else None
                found.append(Example(block.where, service, "python", block.text, expected))
    return found


EXAMPLES = _examples()


def output_matches(expected: str, actual: str) -> bool:
    """Line by line, `…` standing for any text within a line."""
    want = [line.rstrip() for line in expected.strip("\n").splitlines()]
    got = [line.rstrip() for line in actual.strip("\n").splitlines()]
    if len(want) != len(got):
        return False
    return all(re.fullmatch(".*?".join(re.escape(part) for part in w.split("…")), g) for w, g in zip(want, got, strict=True))


@dataclass
class DocServer:
    url: str
    folder: Path
    error: str | None = None


_IN_PROCESS: list[object] = []


@contextlib.contextmanager
def served_in_this_process(source: str) -> Iterator[str]:
    """The Service behind the same ASGI app `fermion serve` runs, on uvicorn in a thread: starts in ~0.1 s."""
    import uvicorn

    from fermion.serving.app import ReplicaApp
    from fermion.serving.config import ServeConfig

    app = ReplicaApp(load_service(source), ServeConfig())
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    server = uvicorn.Server(uvicorn.Config(app, lifespan="on", log_config=None, log_level="warning"))
    _IN_PROCESS.append(server)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="docs-server", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


@pytest.fixture(scope="module")
def doc_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[Block, DocServer]]:
    """A server per Service block that examples run against: `fermion serve` for the pages in
    REAL_PROCESS_PAGES (the user's first steps, end to end), the same app in this process for the others."""
    needed = list(dict.fromkeys(example.service for example in EXAMPLES))
    servers: dict[Block, DocServer] = {}
    saved_path = list(sys.path)
    with contextlib.ExitStack() as stack:
        processes = []
        for block in needed:
            folder = tmp_path_factory.mktemp(f"{block.page.stem}-{block.line}-")
            (folder / "app.py").write_text(block.text, encoding="utf-8")
            names = SERVICE_CLASS.findall(block.text)
            source = str(folder / "app.py") if len(names) == 1 else f"{folder / 'app.py'}:{names[0]}"
            if block.page.name in REAL_PROCESS_PAGES:
                server = stack.enter_context(running_server(source, wait=False, tmp_dir=folder))
                servers[block] = DocServer(server.url, folder)
                processes.append((block, server))
                continue
            try:
                servers[block] = DocServer(stack.enter_context(served_in_this_process(source)), folder)
            except SourceError as exc:
                servers[block] = DocServer("", folder, f"the Service of {block.where} does not load: {exc}")
        for block, server in processes:
            try:
                wait_ready(server.url, server.proc, 90, server.log_path)
            except (RuntimeError, TimeoutError) as exc:
                servers[block].error = f"the Service of {block.where} did not start: {exc}"
        for block, doc_server in servers.items():
            if block.page.name not in REAL_PROCESS_PAGES and not doc_server.error:
                wait_ready(doc_server.url, None, 30)
        yield servers
        for server in _IN_PROCESS:  # ask them all at once; the ExitStack then waits for each
            server.should_exit = True  # type: ignore[attr-defined]
    sys.path[:] = saved_path


def test_getting_started_runs_end_to_end():
    """The first page a user reads is checked end to end: its Service, a command and the client."""
    page = next(p for p in READ if p.path.name == "getting-started.md")
    first_service = next(b for b in page.blocks if is_service_block(b))
    mine = [e for e in EXAMPLES if e.service == first_service]
    assert any(e.kind == "python" and e.expected for e in mine), "getting-started needs a client block followed by its output"
    assert any(e.kind == "call" for e in mine), "getting-started needs a `fermion call` with its output"


@pytest.mark.parametrize("example", EXAMPLES, ids=[f"{e.where}:{e.kind}" for e in EXAMPLES])
def test_example_runs(example: Example, doc_servers: dict[Block, DocServer], monkeypatch: pytest.MonkeyPatch):
    server = doc_servers[example.service]
    if server.error:
        pytest.fail(server.error)
    monkeypatch.chdir(server.folder)
    monkeypatch.delenv("FERMION_TOKEN", raising=False)
    code = example.code.replace(DOC_URL, server.url)
    if example.kind == "curl":
        if shutil.which("curl") is None:
            pytest.skip("curl is not installed")
        ran = subprocess.run(words(code)[0], capture_output=True, text=True, timeout=30)
        assert ran.returncode == 0, f"{example.where}: `{example.code}` failed: {ran.stderr}"
        output = ran.stdout
    elif example.kind == "call":
        from typer.testing import CliRunner

        from fermion.cli import app

        result = CliRunner().invoke(app, fermion_args(words(code)[0]))
        output = result.stdout + result.stderr
        failed = any(line.startswith("error:") for line in (example.expected or "").splitlines())
        assert (result.exit_code != 0) == failed, f"{example.where}: `{example.code}` exited {result.exit_code}: {output}"
    else:
        captured = io.StringIO()
        with contextlib.redirect_stdout(captured):
            exec(compile(code, example.where, "exec"), {"__name__": "__docs_example__"})  # noqa: S102 - the docs' own code
        output = captured.getvalue()
    if example.expected is not None:
        assert output_matches(example.expected, output), (
            f"{example.where}: `{example.code.strip()}`\n--- the docs show:\n{example.expected}\n--- it printed:\n{output}"
        )


def test_output_matching_understands_ellipsis():
    assert output_matches('{"size":…,"head":"from "}', '{"size":1138,"head":"from "}\n')
    assert not output_matches('{"size":…}', '{"size":1}\n{"more":2}')
    assert not output_matches("abab", "ab")
