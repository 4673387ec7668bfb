"""The authoring API: a `Service` is a class whose `@endpoint` methods become HTTP endpoints."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar, overload

from fermion.definition import BatchOptions, DefinitionError

if TYPE_CHECKING:
    from fermion.schema import EndpointSchema

F = TypeVar("F", bound=Callable[..., Any])

_MARK = "__fermion_endpoint__"
_HTTP_METHODS = {"GET", "POST", "PUT", "PATCH", "DELETE"}
_RESERVED_PATHS = {"/healthz", "/readyz", "/metrics", "/openapi.json", "/docs"}


@dataclass(frozen=True)
class EndpointOptions:
    """What `@endpoint(...)` was given; `None` means "use the server's default"."""

    path: str | None = None
    method: str = "POST"
    stream: bool | None = None
    batch: BatchOptions | None = None
    timeout: float | None = None
    max_concurrency: int | None = None
    max_queue: int | None = None
    name: str | None = None
    tags: tuple[str, ...] = ()
    extra: str = "forbid"
    error_style: str = "fermion"


@dataclass
class Endpoint:
    """One endpoint of a Service class: its function, its HTTP route and its derived schema."""

    name: str
    path: str
    method: str
    func: Callable[..., Any]
    is_async: bool
    stream: bool
    batch: BatchOptions | None
    timeout: float | None
    max_concurrency: int | None
    max_queue: int | None
    tags: tuple[str, ...]
    summary: str
    description: str
    extra: str = "forbid"
    error_style: str = "fermion"
    _schema: EndpointSchema | None = field(default=None, repr=False)

    @property
    def schema(self) -> EndpointSchema:
        """Request/response models derived from the signature (built on first use)."""
        if self._schema is None:
            from fermion.schema import build_endpoint_schema

            self._schema = build_endpoint_schema(self)
        return self._schema


@overload
def endpoint(func: F, /) -> F: ...


@overload
def endpoint(
    *,
    path: str | None = None,
    method: str = "POST",
    stream: bool | None = None,
    max_batch_size: int | None = None,
    max_wait_ms: float = 5.0,
    adaptive_wait: bool = False,
    timeout: float | None = None,
    max_concurrency: int | None = None,
    max_queue: int | None = None,
    name: str | None = None,
    tags: tuple[str, ...] | list[str] = (),
    extra: str = "forbid",
    error_style: str = "fermion",
) -> Callable[[F], F]: ...


def endpoint(
    func: Callable[..., Any] | None = None,
    /,
    *,
    path: str | None = None,
    method: str = "POST",
    stream: bool | None = None,
    max_batch_size: int | None = None,
    max_wait_ms: float = 5.0,
    adaptive_wait: bool = False,
    timeout: float | None = None,
    max_concurrency: int | None = None,
    max_queue: int | None = None,
    name: str | None = None,
    tags: tuple[str, ...] | list[str] = (),
    extra: str = "forbid",
    error_style: str = "fermion",
) -> Any:
    """Mark a Service method as an HTTP endpoint.

    The method's signature is the contract: parameters become the request body, the return
    annotation the response. With `max_batch_size`, the method is written over lists and called
    with up to that many requests at once, while each HTTP request still carries one item.
    `extra="ignore"` accepts (and drops) unknown fields instead of answering 422, for wire formats
    that grow (OpenAI's); `error_style="openai"` shapes error bodies as `{"error": {"message", ...}}`.
    """
    method_upper = method.upper()
    if method_upper not in _HTTP_METHODS:
        raise DefinitionError(f"@endpoint(method={method!r}) is not supported; use one of {sorted(_HTTP_METHODS)}")
    batch = None
    if max_batch_size is not None:
        if max_batch_size < 1:
            raise DefinitionError(f"@endpoint(max_batch_size={max_batch_size}) must be at least 1")
        if max_wait_ms < 0:
            raise DefinitionError(f"@endpoint(max_wait_ms={max_wait_ms}) must be zero or more")
        batch = BatchOptions(max_batch_size=max_batch_size, max_wait_ms=float(max_wait_ms), adaptive=adaptive_wait)
    if extra not in ("forbid", "ignore"):
        raise DefinitionError(f"@endpoint(extra={extra!r}) must be 'forbid' or 'ignore'")
    if error_style not in ("fermion", "openai"):
        raise DefinitionError(f"@endpoint(error_style={error_style!r}) must be 'fermion' or 'openai'")
    for label, value in (("timeout", timeout), ("max_concurrency", max_concurrency), ("max_queue", max_queue)):
        if value is not None and value <= 0 and not (label == "max_queue" and value == 0):
            raise DefinitionError(f"@endpoint({label}={value}) must be positive")
    options = EndpointOptions(
        path=path,
        method=method_upper,
        stream=stream,
        batch=batch,
        timeout=timeout,
        max_concurrency=max_concurrency,
        max_queue=max_queue,
        name=name,
        tags=tuple(tags),
        extra=extra,
        error_style=error_style,
    )

    def mark(fn: F) -> F:
        if not callable(fn):
            raise DefinitionError("@endpoint decorates a method")
        setattr(fn, _MARK, options)
        return fn

    if func is not None:
        return mark(func)
    return mark


def _split_doc(func: Callable[..., Any]) -> tuple[str, str]:
    doc = inspect.getdoc(func) or ""
    summary, _, rest = doc.partition("\n")
    return summary.strip(), rest.strip()


def _make_endpoint(attr: str, func: Callable[..., Any], options: EndpointOptions, owner: str) -> Endpoint:
    name = options.name or attr
    path = options.path or "/" + name
    if not path.startswith("/"):
        path = "/" + path
    if path in _RESERVED_PATHS:
        raise DefinitionError(f"{owner}.{attr}: path {path!r} is reserved by the server; pick another with @endpoint(path=...)")
    is_gen = inspect.isgeneratorfunction(func) or inspect.isasyncgenfunction(func)
    stream = is_gen if options.stream is None else options.stream
    if options.batch is not None and stream:
        raise DefinitionError(
            f"{owner}.{attr}: an endpoint cannot both stream and batch; drop one of stream=True / max_batch_size"
        )
    if options.batch is not None and options.method == "GET":
        raise DefinitionError(f"{owner}.{attr}: a batched endpoint takes a request body, so it cannot be GET")
    summary, description = _split_doc(func)
    return Endpoint(
        name=name,
        path=path,
        method=options.method,
        func=func,
        is_async=inspect.iscoroutinefunction(func) or inspect.isasyncgenfunction(func),
        stream=stream,
        batch=options.batch,
        timeout=options.timeout,
        max_concurrency=options.max_concurrency,
        max_queue=options.max_queue,
        tags=options.tags,
        summary=summary or name.replace("_", " ").capitalize(),
        description=description,
        extra=options.extra,
        error_style=options.error_style,
    )


class Service:
    """Base class of everything Fermion serves.

    Subclass it, give it `@endpoint` methods, and optionally `setup()` (runs once per replica
    before it reports ready) and `teardown()` (runs at shutdown).
    """

    #: Name shown in the API docs; defaults to the class name.
    name: ClassVar[str | None] = None
    #: Version shown in the API docs.
    version: ClassVar[str] = "0.1.0"

    __fermion_endpoints__: ClassVar[dict[str, Endpoint]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        found: dict[str, Endpoint] = {}
        for klass in reversed(cls.__mro__):
            for attr, value in vars(klass).items():
                options = getattr(value, _MARK, None)
                if isinstance(options, EndpointOptions):
                    found[attr] = _make_endpoint(attr, value, options, cls.__name__)
                elif attr in found:
                    del found[attr]  # overridden by a plain method in a subclass
        routes: dict[tuple[str, str], str] = {}
        names: dict[str, str] = {}
        for attr, ep in found.items():
            if ep.name in names:
                raise DefinitionError(
                    f"{cls.__name__}: methods {names[ep.name]!r} and {attr!r} both define endpoint {ep.name!r}; "
                    "give one another name with @endpoint(name=...)"
                )
            names[ep.name] = attr
        for ep in found.values():
            key = (ep.method, ep.path)
            if key in routes:
                raise DefinitionError(
                    f"{cls.__name__}: endpoints {routes[key]!r} and {ep.name!r} both serve {ep.method} {ep.path}; "
                    "give one another path with @endpoint(path=...)"
                )
            routes[key] = ep.name
        cls.__fermion_endpoints__ = {ep.name: ep for ep in found.values()}

    def setup(self) -> None:
        """Load models and other resources; runs once per replica before it takes traffic."""

    def teardown(self) -> None:
        """Release resources; runs once when the replica shuts down."""

    def extra_metrics(self) -> Iterable[Any]:
        """Prometheus metric families of the service's own (say, a model's cache use), added to /metrics at scrape time."""
        return ()

    @classmethod
    def endpoints(cls) -> list[Endpoint]:
        """The endpoints of this Service, in definition order."""
        return list(cls.__fermion_endpoints__.values())

    @classmethod
    def service_name(cls) -> str:
        """The name shown in the API docs."""
        return cls.name or cls.__name__
