"""What the sync and async front ends share: the httpx side of a request and the
parts of a client, stream and producer handle that never wait on the network."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Generic, TypedDict, TypeVar

import httpx

from ..errors import StreamNetworkError
from ._core import Request, Response, StreamCore
from ._producer import ProducerCore

DEFAULT_TIMEOUT = 30.0
DEFAULT_LIVE_TIMEOUT = 120.0

H = TypeVar("H", httpx.Client, httpx.AsyncClient)
C = TypeVar("C")
S = TypeVar("S")


def network_error(request: Request, exc: Exception) -> StreamNetworkError:
    return StreamNetworkError(
        f"{request.method} {request.url}: no response ({type(exc).__name__}: {exc})",
        method=request.method,
        url=request.url,
    )


@contextmanager
def no_response(request: Request) -> Iterator[None]:
    """Turn an httpx transport failure while carrying ``request`` (sending it or
    reading its body) into :class:`StreamNetworkError`."""
    try:
        yield
    except httpx.TransportError as exc:
        raise network_error(request, exc) from exc


def to_response(response: httpx.Response, content: bytes = b"") -> Response:
    return Response(response.status_code, dict(response.headers.items()), content)


class HTTPClient(Generic[H]):
    """The connection settings of a client and the httpx request for a core request."""

    def __init__(
        self,
        base_url: str | None,
        http: H,
        *,
        owned: bool,
        headers: Mapping[str, str] | None,
        timeout: float,
        live_timeout: float,
    ) -> None:
        self.base_url = base_url
        self._timeout = httpx.Timeout(timeout)
        self._live_timeout = httpx.Timeout(timeout, read=live_timeout)
        self._owned = owned
        self._http: H = http
        self._headers = dict(headers or {})

    def _build(self, request: Request) -> httpx.Request:
        return self._http.build_request(
            request.method,
            request.url,
            headers={**self._headers, **request.headers},
            content=request.content or None,
            timeout=self._live_timeout if request.live else self._timeout,
        )


class ProducerOptions(TypedDict, total=False):
    """How a producer starts: ``epoch`` and ``seq`` (both 0 by default),
    ``auto_claim`` (False) and ``max_retries`` (3)."""

    epoch: int
    seq: int
    auto_claim: bool
    max_retries: int


class StreamHandle(Generic[C]):
    """One stream on ``client``: the URL and the content type once known."""

    def __init__(self, client: C, url: str, *, content_type: str | None = None):
        self.client = client
        self._core = StreamCore(url, content_type=content_type)

    @property
    def url(self) -> str:
        return self._core.url

    @property
    def content_type(self) -> str | None:
        """The stream's content type, once known (from create, head or a read)."""
        return self._core.content_type

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"


class ProducerHandle(Generic[S]):
    """An idempotent producer's identity and position on ``stream``."""

    def __init__(self, stream: S, core: ProducerCore) -> None:
        self.stream = stream
        self._core = core

    @property
    def producer_id(self) -> str:
        return self._core.producer_id

    @property
    def epoch(self) -> int:
        return self._core.epoch

    @property
    def seq(self) -> int:
        """The Producer-Seq the next request will carry."""
        return self._core.seq

    def bump_epoch(self) -> int:
        return self._core.bump_epoch()
