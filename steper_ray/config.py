"""Typed configuration: pydantic models, YAML files and ``key=value`` overrides.

One ``SteperConfig`` describes a whole run; each command reads its own section. Validation
collects every problem at once and says how to fix each (field description, allowed values,
closest valid name), so a user fixes a config in one edit rather than one error per run.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from steper_ray.errors import UserError

DatasetFormat = Literal["auto", "hotpotqa", "2wikimultihopqa", "musique", "jsonl"]
CorpusFormat = Literal["auto", "jsonl", "title_dict", "title_text_list"]


def _leaf_types(annotation: Any) -> set[Any]:
    """The plain types a field annotation admits: ``int | None`` -> {int, NoneType}; Literal
    values count as their own types (so ``bool | Literal['auto']`` holds bool)."""
    args = get_args(annotation)
    if not args:
        return {annotation}
    if getattr(annotation, "__origin__", None) is Literal:
        return {type(a) for a in args}
    if getattr(annotation, "__origin__", None) in (list, dict, tuple):
        return set()
    return set().union(*(_leaf_types(a) for a in args))


class Section(BaseModel):
    """Base of every config model: unknown keys are errors (typos must not pass silently)."""

    # allow_inf_nan: YAML's .inf / .nan (or 1e400) is never a meaningful setting here
    model_config = ConfigDict(
        extra="forbid", validate_default=True, validate_assignment=True, coerce_numbers_to_str=True,
        allow_inf_nan=False,
    )

    @field_validator("*", mode="before")
    @classmethod
    def _no_boolean_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        # pydantic reads true as 1 for an int or float setting (or list item); a number is never
        # meant as true/false
        if info.field_name is None:
            return value
        annotation = cls.model_fields[info.field_name].annotation
        if isinstance(value, bool):
            kinds = _leaf_types(annotation)
            if bool not in kinds and kinds & {int, float}:
                raise ValueError("is true/false; write a number")
        elif isinstance(value, list) and any(isinstance(v, bool) for v in value):
            items = set().union(*(_leaf_types(get_args(a)[0]) for a in (annotation, *get_args(annotation))
                                  if get_origin(a) is list))
            if bool not in items and items & {int, float}:
                raise ValueError("holds true/false; write numbers")
        return value

    @field_validator("*", mode="after")
    @classmethod
    def _no_blank_output_dir(cls, value: Any, info: ValidationInfo) -> Any:
        # "  " would create a directory named by spaces; the CLI's --out refuses it the same way
        if info.field_name in ("out", "run_dir") and isinstance(value, str) and not value.strip():
            raise ValueError("is blank; give a directory path" + ("" if info.field_name == "run_dir"
                                                                    else ", or null for the default"))
        return value

    @field_validator("*", mode="after")
    @classmethod
    def _home_expanded(cls, value: Any) -> Any:
        # `run_dir=~/runs` is one shell word, so the shell leaves its ~ alone: without this the
        # run would write into a directory literally named "~"
        if isinstance(value, str) and (value == "~" or value.startswith("~/")):
            return os.path.expanduser(value)
        return value


CORPUS_SETTINGS = ("questions", "pooled")  # data.corpus values that are not a file


class DatasetSpec(Section):
    name: str = Field(description="Short name used in output paths and reports, e.g. 'hotpotqa'.")
    path: str = Field(
        description="Dataset file (JSON list or JSON Lines), or 'sample:<file>' for a bundled "
        "sample, e.g. 'sample:hotpotqa/dev.jsonl'."
    )
    format: DatasetFormat = Field(
        "auto", description="Record format; 'auto' detects it from the first records."
    )
    limit: int | None = Field(
        None, ge=1, description="Read at most this many good records (None: all of them)."
    )


def _sample(name: str, file: str) -> DatasetSpec:
    return DatasetSpec(name=name, path=f"sample:{file}")


class DataConfig(Section):
    train: list[DatasetSpec] = Field(
        default_factory=lambda: [
            _sample("hotpotqa", "hotpotqa/train.json"),
            _sample("musique", "musique/train.json"),
        ],
        description="Training questions the teacher answers (generation input).",
    )
    dev: list[DatasetSpec] = Field(
        default_factory=lambda: [
            _sample("hotpotqa", "hotpotqa/dev.jsonl"),
            _sample("musique", "musique/dev.jsonl"),
            _sample("2wikimultihopqa", "2wikimultihopqa/dev.jsonl"),
        ],
        description="Dev sets for evaluation; each gets its own index (what it holds: data.corpus).",
    )
    corpus: str = Field(
        "questions",
        description="What the generation, evaluation and serving indexes hold: 'questions' (the "
        "paragraphs of the questions given: every training question's for generation, each dev "
        "set's own after its limit; the distractor-like setting), 'pooled' (every paragraph of every "
        "split given for the dataset: its data.train and data.dev entries of the same name, no "
        "limit, deduplicated), or a corpus file (path or 'sample:<file>'; JSONL / JSON of {id?, "
        "title, text}, *.tsv / *.tsv.gz with an id, title, text header) indexed once and shared "
        "by every stage.",
    )

    @property
    def corpus_file(self) -> str | None:
        """The corpus file ``corpus`` names, or None for 'questions' and 'pooled'."""
        return None if self.corpus in CORPUS_SETTINGS else self.corpus

    @model_validator(mode="after")
    def _corpus_given(self) -> DataConfig:
        if not self.corpus.strip():
            raise ValueError("data.corpus is empty; use 'questions', 'pooled' or a corpus file path")
        near = self.corpus.strip().lower()
        if near in CORPUS_SETTINGS and self.corpus != near:
            raise ValueError(f"data.corpus {self.corpus!r} is read as a file path; did you mean {near!r}?")
        typo = difflib.get_close_matches(near, CORPUS_SETTINGS, n=1, cutoff=0.6)
        if (self.corpus not in CORPUS_SETTINGS and typo and not self.corpus.startswith("sample:")
                and not Path(self.corpus).expanduser().exists()):
            # checked here, not when a stage first opens the file (after model checks, or never)
            raise ValueError(f"data.corpus {self.corpus!r} is neither 'questions' nor 'pooled' nor an existing "
                             f"file; did you mean {typo[0]!r}?")
        return self

    @model_validator(mode="after")
    def _unique_names(self) -> DataConfig:
        for split in ("train", "dev"):
            names = [d.name for d in getattr(self, split)]
            dupes = sorted({n for n in names if names.count(n) > 1})
            if dupes:
                raise ValueError(
                    f"data.{split} repeats dataset names {dupes}; give each entry a unique 'name'"
                )
        # a dev set's index is index/<name>: these names are the run's other index directories
        taken = sorted({d.name for d in self.dev} & {"train", "pooled", "corpus"})
        if taken:
            raise ValueError(f"data.dev names {taken} are reserved for the run's index directories; "
                             "rename those dev sets (e.g. 'train_dev')")
        return self


class BM25Config(Section):
    backend: Literal["bm25s", "rank_bm25"] = Field(
        "bm25s",
        description="'bm25s' (sparse-matrix BM25, fast) or 'rank_bm25' (pure-Python reference, "
        "about 100x slower; same tokenisation and scoring).",
    )
    k1: float = Field(1.5, gt=0, description="BM25 term-frequency saturation k1.")
    b: float = Field(0.75, ge=0, le=1, description="BM25 length normalisation b, in [0, 1].")
    stopwords: Literal["en", "none"] = Field(
        "en", description="Stopword list removed at tokenisation: 'en' or 'none'."
    )
    stemmer: Literal["english", "none"] = Field(
        "english", description="Snowball stemmer applied to tokens (PyStemmer): 'english' or 'none'."
    )
    tokenizer: Literal["word", "char_ngram"] = Field(
        "word",
        description="'word' (2+ character word tokens: for scripts with spaces between words) or "
        "'char_ngram' (words as 'word' does, but overlapping character n-grams for runs of "
        "scripts written without spaces: Chinese, Japanese, Thai; else each run is one token "
        "and nothing matches).",
    )
    ngram_size: int = Field(
        2, ge=1, le=4, description="Characters per n-gram with tokenizer 'char_ngram' (2: bigrams, "
        "as Lucene's CJK analyser)."
    )


class DenseConfig(Section):
    model: str = Field(
        "minilm",
        description="Sentence-transformers model: a local directory, or 'minilm' for the offline "
        "all-MiniLM-L6-v2 package (pip extra 'cpu' or 'gpu'). Nothing is downloaded.",
    )
    index_type: Literal["flat", "ivf", "hnsw", "ivfpq"] = Field(
        "flat",
        description="FAISS index: 'flat' (exact, small corpora), 'ivf' (IVF-Flat, trained "
        "clusters), 'hnsw' (graph) or 'ivfpq' (IVF + product quantisation: pq_m codes of pq_nbits "
        "bits per vector, for corpora of millions); all on inner product of normalised embeddings.",
    )
    nlist: int = Field(
        256, ge=1, description="IVF clusters (ivf, ivfpq); capped at corpus_size/39 so training has data."
    )
    nprobe: int = Field(16, ge=1, description="IVF clusters visited per query (ivf, ivfpq).")
    pq_m: int = Field(
        48, ge=1, description="ivfpq: sub-quantizers per vector (bytes per vector at 8 bits); must "
        "divide the encoder's dimension (384 for minilm: 8, 16, 24, 32, 48, 96, ...)."
    )
    pq_nbits: int = Field(
        8, ge=4, le=12, description="ivfpq: bits per sub-quantizer code; training needs at least "
        "2^pq_nbits passages."
    )
    pq_refine: Literal["sq8", "flat", "none"] = Field(
        "sq8", description="ivfpq: re-rank the PQ shortlist (pq_refine_k x k candidates) by inner product "
        "with 8-bit scalar-quantised copies of the vectors ('sq8': +dim bytes per vector, 384 for minilm), "
        "with the float vectors ('flat': +4 x dim bytes), or not ('none': the PQ codes alone, smallest, "
        "lowest recall); FAISS IndexRefine."
    )
    pq_refine_k: int = Field(
        20, ge=1, le=1000, description="ivfpq with pq_refine: candidates re-ranked per result (k_factor)."
    )
    train_sample: int = Field(
        100_000, ge=1000, description="ivf, ivfpq: most vectors the clusters and codebooks are trained "
        "on (a seeded random sample; FAISS's guidance is 39-256 points per centroid)."
    )
    hnsw_m: int = Field(32, ge=4, description="HNSW neighbours per node.")
    ef_construction: int = Field(80, ge=8, description="HNSW build-time search depth.")
    ef_search: int = Field(64, ge=8, description="HNSW query-time search depth.")
    batch_size: int = Field(64, ge=1, description="Passages per encoder batch.")
    device: str = Field(
        "auto", description="Encoder device: 'auto' (cuda when available), 'cpu' or 'cuda[:N]'."
    )


class IndexBuildConfig(Section):
    part_passages: int = Field(
        50_000, ge=100, description="Distributed build: passages per part (the unit that is read, "
        "tokenised or encoded by one worker, and resumed: a rerun redoes only unfinished parts)."
    )
    auto_min_mb: float = Field(
        256.0, gt=0, description="index.distributed 'auto': build on Ray Data when the corpus file is at "
        "least this many MB (about 400k Wikipedia-sized passages); dataset paragraphs never are."
    )
    encoders: int = Field(
        2, ge=1, description="Distributed dense build: encoder actors (one per GPU on a cluster)."
    )
    encoder_num_cpus: float = Field(
        1.0, gt=0, description="CPUs each encoder actor reserves; on CPU it also runs that many torch "
        "threads (at least 1)."
    )
    encoder_num_gpus: float = Field(
        0.0, ge=0, description="GPUs each encoder actor reserves (1 on a GPU cluster; 0 on CPU)."
    )
    tokenizers: int = Field(
        2, ge=1, description="Distributed BM25 build: parts tokenised at once (Ray tasks of 1 CPU)."
    )


class IndexConfig(Section):
    kind: Literal["bm25", "dense"] = Field("bm25", description="Index kind: 'bm25' or 'dense'.")
    dataset: str | None = Field(
        None,
        description="`steper-ray index` source: a dataset whose question paragraphs are pooled "
        "into the corpus (path or 'sample:<file>'). Set this or 'corpus', not both.",
    )
    corpus: str | None = Field(
        None,
        description="`steper-ray index` source: a corpus file (JSONL of {id?, title, text}, a "
        "JSON dict title -> sentences, a JSON list of {title, text}, or a *.tsv / *.tsv.gz with an "
        "id, title, text header).",
    )
    format: DatasetFormat = Field("auto", description="Format of 'dataset'; 'auto' detects it.")
    out: str | None = Field(
        None, description="Index directory for `steper-ray index`: new, empty, or an index to rebuild "
        "(a directory holding anything else is refused); None: <run_dir>/index/<source name>, beside "
        "the stage indexes."
    )
    shards: int = Field(
        1, ge=1, le=64, description="Split the index into this many shards by passage id (crc32 of the id "
        "mod shards), each its own directory under the index; `steper-ray serve` runs one retriever "
        "replica group per shard and merges their top-k. BM25 shards score with the whole corpus's "
        "statistics, so the merged top-k is the unsharded one. 1: one index.",
    )
    distributed: bool | Literal["auto"] = Field(
        "auto", description="Build on Ray Data: the corpus file is streamed into parts, which an actor "
        "pool of encoders (dense) or Ray tasks (BM25 tokens) process in parallel, and an interrupted "
        "build resumes at the part it reached. 'auto': when the corpus file is at least "
        "build.auto_min_mb; false: in this process (dataset paragraphs always are)."
    )
    build: IndexBuildConfig = Field(default_factory=IndexBuildConfig,
                                    description="Distributed build settings (index.distributed).")
    bm25: BM25Config = Field(default_factory=BM25Config, description="BM25 settings.")
    dense: DenseConfig = Field(default_factory=DenseConfig, description="Dense settings.")

    @model_validator(mode="after")
    def _one_source(self) -> IndexConfig:
        if self.dataset and self.corpus:
            raise ValueError(
                "index.dataset and index.corpus are both set; keep one (a dataset's paragraphs "
                "or a corpus file)"
            )
        if self.distributed is True and self.kind == "bm25" and self.bm25.backend != "bm25s":
            raise ValueError("index.distributed=true needs index.bm25.backend=bm25s (rank_bm25 holds every "
                             "passage's tokens in one process); set the bm25s backend or index.distributed=auto")
        if self.shards > 1 and self.kind == "bm25" and self.bm25.backend != "bm25s":
            raise ValueError(f"index.shards={self.shards} needs index.bm25.backend=bm25s (rank_bm25 is the "
                             "unsharded reference); set index.shards=1 or the bm25s backend")
        return self


class RetrievalConfig(Section):
    k: int = Field(4, ge=1, le=100, description="Passages retrieved per query (per step).")
    recall_at: list[int] = Field(
        default_factory=lambda: [2, 4, 8, 10],
        description="Cut-offs for recall@k of gold paragraphs in reports: 1 to 1000 each, at least one.",
    )

    @field_validator("recall_at")
    @classmethod
    def _recall_cutoffs_in_range(cls, value: list[int]) -> list[int]:
        bad = [v for v in value if not 1 <= v <= 1000]
        if not value:
            raise ValueError("is empty; give at least one cut-off from 1 to 1000, e.g. [2, 4, 8, 10]")
        if bad:
            shown = f"{bad} are" if len(bad) > 1 else f"{bad[0]} is"
            raise ValueError(f"{shown} outside 1 to 1000; give cut-offs from 1 to 1000, e.g. [2, 4, 8, 10]")
        return sorted(set(value))


class ReasoningConfig(Section):
    max_steps: int = Field(
        5, ge=2, le=16, description="S: most steps per question (init + expansions + agg)."
    )
    max_passages: int | None = Field(
        None, ge=1,
        description="Cap on accumulated passages per question (append-only, deduplicated); None: "
        "retrieval.k x max_steps, so every step can add its passages. At least retrieval.k.",
    )
    teacher_prompt: str | None = Field(
        None,
        description="YAML with the teacher's instruction and few-shot demonstrations; None: the "
        "bundled steper_ray/reasoning/teacher_prompt.yaml. When set, its demonstrations are used "
        "for every dataset (it overrides 'demos').",
    )
    demos: Literal["auto", "bundled"] = Field(
        "auto",
        description="Teacher demonstrations: 'auto' builds num_demos per dataset from annotated "
        "training questions of that dataset (held out of generation), falling back to the bundled "
        "ones for a dataset without annotations; 'bundled' uses the file's for every dataset.",
    )
    num_demos: int = Field(
        2, ge=1, le=8,
        description="Demonstrations per dataset with demos 'auto' (IRCoT-style teachers are few-shot).",
    )
    step_text: Literal["first_sentence", "line"] = Field(
        "first_sentence",
        description="What a step keeps of a multi-sentence output: the first sentence (as IRCoT) "
        "or the whole line. A sentence with the answer marker is always kept.",
    )
    retry_min_tokens: int = Field(
        4, ge=1,
        description="A step with nothing usable (empty, end-of-sequence first) is asked again with "
        "this many tokens that cannot end it.",
    )
    retry_temperature: float = Field(
        0.7, ge=0,
        description="Temperature of a step's last try, a short sampled fallback (seeded with the "
        "model's seed); 0 keeps every retry greedy.",
    )
    max_attempts: int = Field(
        3, ge=1, le=5, description="Tries per step (first try + retries) before the question ends."
    )


class GeneratorConfig(Section):
    kind: Literal["evidence", "vllm", "hf", "openai"] = Field(
        "evidence",
        description="'evidence' (writes steps from dataset annotations; no LLM; an upper bound), "
        "'vllm', 'hf' (transformers) or 'openai' (an OpenAI-compatible completions endpoint).",
    )
    model: str | None = Field(
        None, description="Local model directory (vllm, hf), 'smollm2' (the offline SmolLM2-135M-"
        "Instruct, prepared on first use), or served model name (openai)."
    )
    prompt_format: Literal["auto", "completion", "chat"] = Field(
        "auto",
        description="'completion' (raw IRCoT text) or 'chat' (messages through the model's chat "
        "template, the step written inside the assistant turn); 'auto': chat when the model "
        "directory has a chat template (openai: completion).",
    )
    tensor_parallel_size: int = Field(1, ge=1, description="vLLM tensor parallel GPUs per replica.")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="Weights dtype; 'auto' = bfloat16 on GPU, float32 on CPU."
    )
    max_model_len: int = Field(4096, ge=128, description="Longest prompt + output in tokens.")
    gpu_memory_utilization: float = Field(
        0.9, gt=0, le=1, description="vLLM share of GPU memory (ignored on CPU)."
    )
    enable_prefix_caching: bool = Field(
        True, description="vLLM prefix caching: steps of a question share their prompt prefix."
    )
    temperature: float = Field(0.0, ge=0, description="Sampling temperature; 0 = greedy.")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling mass.")
    max_tokens: int = Field(64, ge=1, description="Most tokens per step (one sentence).")
    seed: int = Field(0, description="Sampling seed.")
    batch_size: int = Field(8, ge=1, description="hf: prompts per forward batch.")
    device: str = Field("auto", description="hf: 'auto', 'cpu' or 'cuda[:N]'.")
    base_url: str | None = Field(
        None, description="openai: endpoint base, e.g. http://teacher:8000/v1."
    )
    api_key_env: str | None = Field(
        "OPENAI_API_KEY", description="openai: environment variable holding the API key (optional)."
    )
    timeout_s: float = Field(60.0, gt=0, description="openai: per-request timeout.")
    max_retries: int = Field(4, ge=0, description="openai: retries on timeouts, 429 and 5xx.")
    concurrency: int = Field(16, ge=1, description="openai: requests in flight per replica.")

    @model_validator(mode="after")
    def _needs(self) -> GeneratorConfig:
        problems = []
        if self.kind in ("vllm", "hf", "openai") and not self.model:
            problems.append(f"kind '{self.kind}' needs 'model' (a local model directory or served name)")
        if self.kind == "openai" and not self.base_url:
            problems.append("kind 'openai' needs 'base_url', e.g. http://host:8000/v1")
        if problems:
            raise ValueError("; ".join(problems))
        return self


class FilterConfig(Section):
    match: Literal["em", "f1", "contains"] = Field(
        "em",
        description="Keep a trace when its answer matches a gold answer or alias by exact match "
        "('em'), by F1 >= f1_threshold ('f1'), or by containing it as whole words, a yes/no "
        "gold exactly ('contains').",
    )
    f1_threshold: float = Field(0.8, gt=0, le=1, description="Threshold for match 'f1'.")


class GenerateConfig(Section):
    index: str | None = Field(
        None,
        description="Index to retrieve from; None: <run_dir>/index/train, built from the "
        "training questions' paragraphs if missing.",
    )
    out: str | None = Field(None, description="Output directory; None: <run_dir>/generate.")
    teacher: GeneratorConfig = Field(default_factory=GeneratorConfig, description="The teacher.")
    filter: FilterConfig = Field(default_factory=FilterConfig, description="Trace filtering.")
    replicas: int = Field(1, ge=1, description="Teacher actors (each holds an engine and a retriever).")
    batch_size: int = Field(16, ge=1, description="Questions per Ray Data batch (one loop run).")
    num_cpus: float = Field(1.0, gt=0, description="CPUs reserved per teacher actor.")
    num_gpus: float = Field(
        0.0, ge=0, description="GPUs per actor for tensor_parallel_size 1; with TP > 1 each "
        "actor gets a placement group of TP one-GPU bundles instead."
    )
    limit: int | None = Field(None, ge=1, description="Use at most this many questions per dataset.")


class LossConfig(Section):
    mode: Literal["steper", "uniform", "vanilla_kd"] = Field(
        "steper",
        description="'steper' (learned sigma per task), 'uniform' (fixed 'weights') or "
        "'vanilla_kd' (agg examples only): the paper's ablations.",
    )
    weights: list[float] = Field(
        default_factory=lambda: [1.0, 1.0, 1.0],
        description="Fixed weights for init, exp, agg (e.g. [1.5, 1, 0.5]), used by 'uniform'; three "
        "numbers from 0 to 100, not all 0, in every mode.",
    )
    target: Literal["next", "cumulative"] = Field(
        "cumulative",
        description="'cumulative' (the paper's loss l(M(q, P<=s), R<=s): every step's tokens of "
        "the reasoning so far carry loss) or 'next' (only step s's sentence: the inference-shaped "
        "variant). vanilla_kd always trains on the whole chain.",
    )
    sigma_lr: float = Field(
        1e-2, gt=0, description="Learning rate of the s_j = log sigma_j^2 parameters (no weight decay)."
    )
    init_log_var: float = Field(
        0.0, ge=-10, le=10,
        description="Initial s_j (0: sigma_j = 1). Within [-10, 10]: the task weight exp(-s_j)/2 "
        "then stays between 2e-5 and 1.1e4, which float32 losses carry.",
    )

    @field_validator("weights", mode="before")
    @classmethod
    def _no_booleans(cls, value: Any) -> Any:
        # pydantic reads true as 1.0; a weight is a number. (Strict floats would also refuse YAML's
        # 1e-3, which PyYAML reads as a string.)
        if isinstance(value, list) and any(isinstance(x, bool) for x in value):
            raise ValueError(f"loss.weights {value} holds true/false; write three numbers, e.g. [1, 1, 1]")
        return value

    @model_validator(mode="after")
    def _three_weights(self) -> LossConfig:
        w = self.weights
        if len(w) != 3 or any(x < 0 or x > 100 for x in w) or not any(w):
            raise ValueError(f"loss.weights is {w}; it needs three numbers from 0 to 100, not all 0: the "
                             "fixed weights of init, exp, agg, e.g. [1, 1, 1] or [1.5, 1, 0.5]")
        return self


class TrainConfig(Section):
    student: str | None = Field(
        None, description="Student model directory (Hugging Face) or 'smollm2' (prepared on first "
        "use); None: the offline tiny Llama built into <run_dir>/models/student."
    )
    prompt_format: Literal["auto", "completion", "chat"] = Field(
        "auto",
        description="The student's prompt layout, in training and wherever it answers: "
        "'completion', 'chat' (its chat template), or 'auto' (chat when the base model has one).",
    )
    examples: str | None = Field(
        None, description="Step examples (Parquet file or directory); None: the examples generate "
        "writes, <generate.out or <run_dir>/generate>/examples."
    )
    out: str | None = Field(None, description="Output directory; None: <run_dir>/train.")
    run_name: str = Field("student", description="Ray Train run name; a rerun with the same name resumes.")
    loss: LossConfig = Field(default_factory=LossConfig, description="The multi-task loss.")
    lr: float = Field(1e-3, gt=0, description="Peak learning rate of the model weights.")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay (not on norms, biases, sigmas).")
    warmup_ratio: float = Field(0.1, ge=0, lt=1, description="Share of steps of linear warmup.")
    epochs: int = Field(2, ge=1, description="Passes over the examples.")
    max_steps: int | None = Field(None, ge=1, description="Stop after this many optimizer steps.")
    micro_batch_size: int = Field(2, ge=1, description="Examples per worker per forward pass.")
    grad_accum: int = Field(3, ge=1, description="Micro-batches per optimizer step per worker.")
    grad_clip: float = Field(1.0, gt=0, description="Global gradient-norm clip.")
    max_len: int = Field(2048, ge=32, description="Longest example in tokens; longer prompts lose passages.")
    trim: Literal["oldest", "newest"] = Field(
        "oldest", description="Which passages leave a too-long prompt first."
    )
    zero_stage: Literal[2, 3] = Field(3, description="DeepSpeed ZeRO stage.")
    offload_optimizer: bool = Field(False, description="ZeRO optimizer state on CPU.")
    offload_params: bool = Field(False, description="ZeRO-3 parameters on CPU.")
    gradient_checkpointing: bool = Field(False, description="Recompute activations in backward.")
    num_workers: int = Field(2, ge=1, description="Ray Train workers (one per GPU on GPU).")
    use_gpu: bool = Field(False, description="Workers get one GPU each, NCCL; else CPU and gloo.")
    cpus_per_worker: float = Field(
        0.5, gt=0, description="CPUs Ray reserves per worker (a fraction lets workers share cores on a small machine)."
    )
    threads_per_worker: int | None = Field(
        None, ge=1, description="torch intra-op threads per worker; None: one per whole CPU the worker "
        "reserves (Ray's default, at least 1), or torch's default without Ray."
    )
    checkpoint_every: int = Field(20, ge=1, description="Checkpoint (and report) every N steps.")
    keep_checkpoints: int = Field(2, ge=1, description="Checkpoints kept by Ray Train.")
    max_failures: int = Field(2, ge=0, description="Worker failures survived (restart from the last checkpoint).")
    seed: int = Field(0, description="Data order and initialisation seed.")
    log_every: int = Field(1, ge=1, description="Write metrics every N steps.")
    mlflow_uri: str | None = Field(
        None, description="MLflow tracking URI (e.g. file:/path/mlruns); None: no MLflow."
    )
    tensorboard: bool = Field(False, description="Also write TensorBoard event files under <out>/tb.")


class EvaluateConfig(Section):
    model: GeneratorConfig | None = Field(
        None,
        description="The model evaluated; None: transformers (hf) on <run_dir>/train/model, the "
        "trained student. Use kind 'vllm' on GPU, 'evidence' for the evidence-teacher bound.",
    )
    prompt: Literal["student", "teacher"] = Field(
        "student", description="'student' (bare step prompt) or 'teacher' (instruction + demos)."
    )
    student_engine: Literal["hf", "vllm"] = Field(
        "hf",
        description="Engine for this run's own student when 'model' is unset: the trained export "
        "and, with 'baseline', the base model ('vllm' shares step prefixes: prefix caching).",
    )
    baseline: bool = Field(
        False,
        description="The pipeline also evaluates the untrained student (train.student, zero-shot, "
        "the same student prompt) before training, reported beside the trained one.",
    )
    index_dir: str | None = Field(
        None,
        description="Directory with one index per dev dataset (<index_dir>/<name>); None: "
        "<run_dir>/index, built from each dev set's paragraphs when missing.",
    )
    out: str | None = Field(None, description="Output directory; None: <run_dir>/evaluate.")
    replicas: int = Field(1, ge=1, description="Evaluation actors (each holds an engine and the retrievers).")
    batch_size: int = Field(16, ge=1, description="Questions per Ray Data batch (one loop run).")
    num_cpus: float = Field(1.0, gt=0, description="CPUs reserved per evaluation actor.")
    num_gpus: float = Field(0.0, ge=0, description="GPUs per evaluation actor (1 for vLLM on GPU).")
    limit: int | None = Field(None, ge=1, description="Evaluate at most this many questions per dev set.")


AblationMode = Literal["steper", "uniform", "first_heavy", "last_heavy", "vanilla_kd"]
ABLATION_MODES: tuple[str, ...] = get_args(AblationMode)


class AblateConfig(Section):
    modes: list[AblationMode] = Field(
        default_factory=lambda: list(ABLATION_MODES), min_length=1,
        description="Loss settings trained and evaluated, one table row each, in this order: "
        "'steper' (learned sigmas), 'uniform' (fixed weights 1/1/1), 'first_heavy' (1.5/1/0.5), "
        "'last_heavy' (0.5/1/1.5), 'vanilla_kd' (agg examples, the whole chain as target): the "
        "paper's ablations.",
    )
    out: str | None = Field(
        None, description="Output directory; None: <run_dir>/ablate. Mode M trains into <out>/M/train "
        "and is evaluated into <out>/M/evaluate.",
    )

    @field_validator("modes", mode="before")
    @classmethod
    def _unknown_and_repeated(cls, value: Any) -> Any:
        # The per-item check below stops at unknown modes; a list with both faults names both here.
        if isinstance(value, list):
            unknown = [m for m in value if m not in ABLATION_MODES]
            dupes = sorted({str(m) for m in value if value.count(m) > 1})
            if unknown and dupes:
                raise ValueError(f"ablate.modes has unknown modes {unknown} (the modes: "
                                 f"{', '.join(ABLATION_MODES)}) and repeats {dupes}; list each mode once")
        return value

    @model_validator(mode="after")
    def _unique_modes(self) -> AblateConfig:
        dupes = sorted({m for m in self.modes if self.modes.count(m) > 1})
        if dupes:
            raise ValueError(f"ablate.modes repeats {dupes}; list each mode once")
        return self


class AutoscalingConfig(Section):
    min_replicas: int = Field(1, ge=0, description="Fewest replicas (0 lets an idle deployment scale to zero).")
    max_replicas: int = Field(1, ge=1, description="Most replicas.")
    target_ongoing_requests: float = Field(
        2.0, gt=0, description="Requests in flight per replica the autoscaler aims for."
    )
    upscale_delay_s: float = Field(10.0, ge=0, description="Load must stay high this long before scaling up.")
    downscale_delay_s: float = Field(300.0, ge=0, description="Load must stay low this long before scaling down.")

    @model_validator(mode="after")
    def _bounds(self) -> AutoscalingConfig:
        if self.min_replicas > self.max_replicas:
            raise ValueError(
                f"min_replicas ({self.min_replicas}) is above max_replicas ({self.max_replicas}); "
                "raise max_replicas or lower min_replicas"
            )
        return self


class DeploymentConfig(Section):
    autoscaling: AutoscalingConfig = Field(
        default_factory=AutoscalingConfig, description="Replica bounds and autoscaling targets."
    )
    max_ongoing_requests: int = Field(32, ge=1, description="Requests one replica accepts at once; more queue.")
    num_cpus: float = Field(0.5, ge=0, description="CPUs reserved per replica.")
    num_gpus: float = Field(0.0, ge=0, description="GPUs per replica (1 for the reasoner on GPU).")


class ServeConfig(Section):
    host: str = Field("127.0.0.1", description="HTTP bind address ('0.0.0.0' to listen on every interface).")
    port: int = Field(8000, ge=1, le=65535, description="HTTP port.")
    app_name: str = Field("steper", description="Serve application name.")
    route_prefix: str = Field("/", description="URL prefix of the application: '/' or a path such as '/steper' "
                              "(a leading '/', no trailing one).")

    @field_validator("route_prefix")
    @classmethod
    def _serve_route_prefix(cls, value: str) -> str:
        # Ray Serve's own rules, checked here so a bad prefix is a config error, not a traceback at start
        if not value.startswith("/") or (value != "/" and value.endswith("/")) or any(c in value for c in "{}?# "):
            raise ValueError("must start with '/' and not end with one (other than '/' itself), without '{', '}', "
                             "'?', '#' or spaces; e.g. '/' or '/steper'")
        return value

    model: GeneratorConfig | None = Field(
        None,
        description="The served student; None: transformers (hf) on <run_dir>/train/model. "
        "kind 'vllm' uses vLLM's async engine (continuous batching across requests).",
    )
    index: str | None = Field(
        None, description="Index directory served by the retriever; None: the first dev set's index "
        "(<evaluate.index_dir or <run_dir>/index>/<name>)."
    )
    max_question_chars: int = Field(1000, ge=1, description="Longest question accepted (longer: 422; the "
                                    "OpenAPI schema declares it).")
    max_k: int = Field(20, ge=1, description="Largest per-request 'k' accepted.")
    max_steps: int = Field(8, ge=2, description="Largest per-request 'max_steps' accepted.")
    max_body_bytes: int = Field(1_048_576, ge=1024, description="Largest request body accepted, in bytes "
                                "(larger: 413, refused before it is parsed).")
    openai_model: str = Field("steper-student", min_length=1, description="The model name of the "
                              "OpenAI-compatible API: GET /v1/models lists it; POST /v1/chat/completions "
                              "requires it in 'model'.")
    request_timeout_s: float = Field(
        60.0, gt=0, description="A request still running after this long gets 504."
    )
    retriever_timeout_s: float = Field(
        10.0, gt=0, description="Waiting longer than this for the retriever deployment gives 503."
    )
    auth_token_env: str | None = Field(
        "STEPER_API_TOKEN",
        description="Environment variable holding the bearer token; when it is set (on the "
        "serving nodes), /v1/* requests without 'Authorization: Bearer <token>' get 401.",
    )
    batch_max_size: int = Field(16, ge=1, description="transformers: most step prompts one reasoner replica "
                                "batches together (vLLM schedules in-flight requests itself).")
    batch_wait_s: float = Field(0.005, ge=0, description="transformers: how long a batch waits to fill.")
    retriever: DeploymentConfig = Field(default_factory=DeploymentConfig, description="Retriever deployment.")
    reasoner: DeploymentConfig = Field(default_factory=DeploymentConfig, description="Reasoner (student) deployment.")
    ingress: DeploymentConfig = Field(
        default_factory=lambda: DeploymentConfig(max_ongoing_requests=64, num_cpus=0.1),
        description="HTTP ingress deployment.",
    )


class TinyModelConfig(Section):
    vocab_size: int = Field(2048, ge=300, description="BPE vocabulary trained on the corpus.")
    hidden_size: int = Field(128, ge=16, description="Model width.")
    num_layers: int = Field(2, ge=1, description="Decoder layers.")
    num_heads: int = Field(2, ge=1, description="Attention heads (head_dim = hidden/heads).")
    num_kv_heads: int = Field(2, ge=1, description="Key/value heads (grouped-query attention).")
    intermediate_size: int = Field(256, ge=16, description="MLP width.")
    max_position_embeddings: int = Field(4096, ge=128, description="Longest sequence.")
    seed: int = Field(0, description="Seed for weights (tokenizer training is deterministic).")

    @model_validator(mode="after")
    def _heads_divide(self) -> TinyModelConfig:
        problems = []
        if self.hidden_size % self.num_heads:
            problems.append("hidden_size must be a multiple of num_heads")
        if self.num_heads % self.num_kv_heads:
            problems.append("num_heads must be a multiple of num_kv_heads")
        if problems:
            raise ValueError("; ".join(problems))
        return self


class BenchRetrievalConfig(Section):
    large_corpus_size: int = Field(
        100_000,
        ge=1000,
        description="Passages in the synthetic large corpus, built from the real dev passages.",
    )
    num_queries: int = Field(
        200, ge=10, description="Queries timed per corpus (dev questions, cycled if needed)."
    )
    scale_passages: int | None = Field(
        None, ge=1000, description="Passages of the `scale` measurement (`--passages N`): bm25s and every FAISS "
        "type built, saved, loaded in a fresh process and searched at this size (FAISS on synthetic vectors "
        "around encoded real ones); None skips it.",
    )
    encode_slice: int | None = Field(
        None, ge=300, description="`scale`: real passages encoded (the encode rate, the seeds of the synthetic "
        "vectors and the real-vector check); None: every dev passage.",
    )
    scale_engines: list[Literal["bm25s", "flat", "ivf", "hnsw", "ivfpq"]] = Field(
        default_factory=lambda: ["bm25s", "flat", "ivf", "hnsw", "ivfpq"],
        description="Engines the scale measurement builds; flat (the exact reference of recall@10) is "
        "added whenever an approximate FAISS type is named.",
    )


MAX_BENCH_CLIENTS = 1024  # concurrent HTTP clients of `bench serving`: one event loop, one connection each


class _BenchWithModel(Section):
    """A benchmark section whose ``model`` (declared by the subclass) is None, meaning the
    offline tiny Llama, or a non-blank model directory / known name."""

    @field_validator("model", check_fields=False)
    @classmethod
    def _model_not_blank(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("is blank; give a model directory or 'smollm2', or null (leave --model out) for "
                             "the offline tiny Llama")
        return value


class BenchGenerationConfig(_BenchWithModel):
    model: str | None = Field(
        None, description="Teacher model: a directory or 'smollm2' (prepared offline on first use); None builds "
        "the offline tiny Llama."
    )
    num_questions: int = Field(60, ge=4, description="Training questions generated on each side.")
    batch_size: int = Field(10, ge=1, description="Questions per batch (loop run) on each side.")
    max_tokens: int = Field(32, ge=1, description="Most tokens per step.")


class BenchTrainingConfig(Section):
    steps: int = Field(12, ge=3, description="Optimizer steps timed on each side (first two are warm-up).")


class BenchServingConfig(_BenchWithModel):
    model: str | None = Field(
        None, description="Student model directory or 'smollm2'; None: a tiny Llama built offline into the output dir."
    )
    engine: Literal["hf", "vllm"] = Field(
        "hf", description="Engine on both sides: 'hf' (transformers, dynamic batching) or 'vllm' (its async engine)."
    )
    concurrency: list[int] = Field(
        default_factory=lambda: [1, 4, 16], description="Concurrent clients, one measurement each: distinct levels of at least 1."
    )

    @field_validator("concurrency")
    @classmethod
    def _levels_distinct_and_positive(cls, value: list[int]) -> list[int]:
        if not value:
            raise ValueError("is empty; give at least one level of concurrent clients, e.g. [1, 4, 16]")
        bad = [c for c in value if c < 1]
        if bad:
            raise ValueError(f"{', '.join(map(str, bad))} below 1; each level is a number of concurrent clients, "
                             "e.g. [1, 4, 16]")
        big = [c for c in value if c > MAX_BENCH_CLIENTS]
        if big:
            raise ValueError(f"{', '.join(map(str, big))} above {MAX_BENCH_CLIENTS}; one benchmark client process "
                             f"drives at most {MAX_BENCH_CLIENTS} concurrent clients, e.g. [1, 4, 16]")
        twice = sorted({c for c in value if value.count(c) > 1})
        if twice:
            raise ValueError(f"{', '.join(map(str, twice))} given more than once; give each level once, e.g. [1, 4, 16]")
        return value

    requests_per_level: int = Field(
        32, ge=4, le=100_000, description="Questions per concurrency level, each asked once on each side (at least twice the "
        "level's concurrency: above 1 the sides take turns over its two halves)."
    )
    max_steps: int = Field(3, ge=2, description="Reasoning steps per request.")
    max_tokens: int = Field(16, ge=1, description="Most tokens per step.")
    k: int | None = Field(None, ge=1, description="Passages per step; None: retrieval.k.")
    max_model_len: int = Field(4096, ge=256, description="The engine's longest prompt + output in tokens.")
    reasoner_cpus: float | None = Field(
        None, gt=0, description="CPUs of the reasoner replica (its engine's threads); None: every core, "
        "as the in-process side has."
    )


class BenchIndexConfig(Section):
    passages: int = Field(1200, ge=10, description="Real dev paragraphs encoded on each side (cycled).")
    part_passages: int = Field(300, ge=10, description="Passages per part of the distributed build (one encode call each, on every side).")
    actors: int = Field(2, ge=1, description="Encoder actors in the pool, and single-process encoders summed.")
    encoder_num_cpus: float = Field(1.0, gt=0, description="CPUs (torch threads) of each actor and single encoder.")
    rounds: int = Field(3, ge=1, le=20, description="Rounds of all four sides in turn; the summary and the target "
                                                   "take the round with the median ratio (the lower middle one for "
                                                   "an even count), so a slow spell of the machine lands in one "
                                                   "round instead of on one side.")


class BenchConfig(Section):
    retrieval: BenchRetrievalConfig = Field(
        default_factory=BenchRetrievalConfig, description="`steper-ray bench retrieval`."
    )
    generation: BenchGenerationConfig = Field(
        default_factory=BenchGenerationConfig, description="`steper-ray bench generation`."
    )
    training: BenchTrainingConfig = Field(
        default_factory=BenchTrainingConfig, description="`steper-ray bench training`."
    )
    index: BenchIndexConfig = Field(
        default_factory=BenchIndexConfig, description="`steper-ray bench index` (distributed build encoders)."
    )
    serving: BenchServingConfig = Field(
        default_factory=BenchServingConfig, description="`steper-ray bench serving`."
    )


class SteperConfig(Section):
    run_dir: str = Field("runs/local", description="Directory every stage writes into.")
    data: DataConfig = Field(default_factory=DataConfig, description="Datasets.")
    index: IndexConfig = Field(default_factory=IndexConfig, description="Indexing.")
    retrieval: RetrievalConfig = Field(default_factory=RetrievalConfig, description="Retrieval.")
    reasoning: ReasoningConfig = Field(default_factory=ReasoningConfig, description="The step-wise loop.")
    generate: GenerateConfig = Field(default_factory=GenerateConfig, description="Teacher traces.")
    train: TrainConfig = Field(default_factory=TrainConfig, description="Student training.")
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig, description="Evaluation on the dev sets.")
    ablate: AblateConfig = Field(
        default_factory=AblateConfig, description="`steper-ray ablate`: the paper's loss ablations."
    )
    serve: ServeConfig = Field(default_factory=ServeConfig, description="The HTTP endpoint (Ray Serve).")
    tiny_model: TinyModelConfig = Field(
        default_factory=TinyModelConfig, description="Offline tiny Llama built for tests/demo."
    )
    bench: BenchConfig = Field(default_factory=BenchConfig, description="Benchmarks.")

    @model_validator(mode="after")
    def _passage_cap(self) -> SteperConfig:
        cap = self.reasoning.max_passages
        if cap is not None and cap < self.retrieval.k:
            raise ValueError(
                f"reasoning.max_passages ({cap}) is below retrieval.k ({self.retrieval.k}): the first "
                f"step could not show what it retrieved; set it to at least {self.retrieval.k}, or to "
                f"null for k x max_steps ({self.retrieval.k * self.reasoning.max_steps})"
            )
        return self

    def passage_cap(self) -> int:
        """reasoning.max_passages, or retrieval.k x reasoning.max_steps when unset."""
        return self.reasoning.max_passages or self.retrieval.k * self.reasoning.max_steps


class ConfigError(UserError):
    """Every problem in a config, one per line, each with its fix."""

    def __init__(self, source: str, problems: list[str]):
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"invalid configuration ({source}), {len(problems)} problem(s):\n{lines}")


T = TypeVar("T", bound=BaseModel)


def parse_overrides(overrides: list[str]) -> tuple[dict[str, Any], list[str]]:
    """``a.b=1`` strings -> nested dict; values are parsed as YAML (``k=4`` is an int)."""
    tree: dict[str, Any] = {}
    problems = []
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            problems.append(f"override {item!r} is not key=value; write e.g. index.kind=dense")
            continue
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as exc:
            problems.append(f"override {item!r}: value is not valid YAML ({exc.__class__.__name__})")
            continue
        node = tree
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                problems.append(f"override {item!r} conflicts with an earlier override of {part!r}")
                break
            node = child
        else:
            node[parts[-1]] = value
    return tree, problems


def _merge(base: dict[str, Any], extra: dict[str, Any], problems: list[str], where: str = "") -> dict[str, Any]:
    """``base`` (the file) with ``extra`` (the overrides) laid over it, section by section.

    Overrides inside a key the file sets to a value that is not a section (``train: "lr=1"``,
    ``ablate: [steper]``) are a problem (added to ``problems``): either replacing the file's
    value or dropping the overrides would hide a mistake."""
    out = dict(base)
    for key, value in extra.items():
        here = f"{where}{key}"
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value, problems, f"{here}.")
        elif isinstance(value, dict) and out.get(key) is not None:
            problems.append(f"{here}: overrides {', '.join(_dotted(value, here))} go inside {here}, which "
                            f"the config file sets to a {type(out[key]).__name__} ({out[key]!r:.60}), not a "
                            "section; fix whichever is wrong")
            del out[key]  # reported once, here, not again by validation
        else:
            out[key] = value
    return out


def _dotted(tree: dict[str, Any], prefix: str) -> list[str]:
    """The dotted keys of a nested override tree: {"a": {"b": 1}} under "x" -> ["x.a.b"]."""
    keys = []
    for k, v in tree.items():
        keys += _dotted(v, f"{prefix}.{k}") if isinstance(v, dict) and v else [f"{prefix}.{k}"]
    return keys


def nested_model(annotation: Any) -> type[BaseModel] | None:
    """The BaseModel inside an annotation such as ``X``, ``X | None`` or ``list[X]``."""
    for cand in (annotation, *(getattr(annotation, "__args__", ()) or ())):
        if isinstance(cand, type) and issubclass(cand, BaseModel):
            return cand
    return None


def _model_at(model: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The config model reached by walking an error location (list indices skipped)."""
    current: type[BaseModel] | None = model
    for part in loc:
        if isinstance(part, int):
            continue
        field = current.model_fields.get(str(part)) if current else None
        current = nested_model(field.annotation) if field else None
    return current


def _describe(model: type[BaseModel], err: dict[str, Any]) -> str:
    loc = tuple(err["loc"])
    path = ".".join(str(p) for p in loc) or "(top level)"
    holder = _model_at(model, loc[:-1]) if loc else model
    etype = err["type"]
    if etype == "extra_forbidden":
        valid = sorted(holder.model_fields) if holder else []
        guess = difflib.get_close_matches(str(loc[-1]), valid, n=1)
        prefix = "".join(f"{p}." for p in loc[:-1])
        hint = f"did you mean {prefix + guess[0]!r}? " if guess else ""
        return f"{path}: unknown key; {hint}valid keys here: {', '.join(valid)}"
    if etype == "value_error" and isinstance(err.get("input"), dict):
        # a check across a section's fields (a model validator): its message names the keys and the fix
        return f"{path}: {err['msg'].removeprefix('Value error, ')}"
    field = holder.model_fields.get(str(loc[-1])) if holder and loc else None
    desc = f" ({field.description})" if field is not None and field.description else ""
    given = "" if etype == "missing" else f"; got {err.get('input')!r}"
    if etype == "value_error":  # a validator's own message already says what to write
        return f"{path}: {err['msg'].removeprefix('Value error, ')}{given}{desc}"
    return f"{path}: {err['msg']}{given}. Fix: {_fix(etype, err.get('ctx') or {}, field)}{desc}"


# What to write instead, by pydantic error type (pydantic.dev/latest/errors/validation_errors).
_FIX_BY_TYPE = {
    "missing": "add it",
    "int_parsing": "write a whole number", "int_type": "write a whole number",
    "int_from_float": "write a whole number",
    "float_parsing": "write a number", "float_type": "write a number",
    "bool_parsing": "write true or false", "bool_type": "write true or false",
    "string_type": "write a string (quote it in YAML)",
    "list_type": "write a list, e.g. [a, b]", "dict_type": "write a mapping, e.g. {key: value}",
    "model_type": "write a mapping of its keys", "model_attributes_type": "write a mapping of its keys",
    "greater_than": "set it above {gt}", "greater_than_equal": "set it to {ge} or more",
    "less_than": "set it below {lt}", "less_than_equal": "set it to {le} or less",
    "literal_error": "set it to one of {expected}", "enum": "set it to one of {expected}",
    "string_too_short": "give at least {min_length} character(s)",
    "too_short": "give at least {min_length} item(s)", "too_long": "give at most {max_length} item(s)",
}


def _fix(etype: str, ctx: dict[str, Any], field: Any) -> str:
    """The concrete change for one validation error, with the field's default when it has one."""
    template = _FIX_BY_TYPE.get(etype)
    try:
        fix = template.format(**ctx) if template else "change the value as the message says"
    except (KeyError, IndexError):
        fix = template or "change the value as the message says"
    default = getattr(field, "default", None)
    if etype != "missing" and default is not None and isinstance(default, (int, float, str, bool)) \
            and not isinstance(default, type):
        fix += f" (default {default!r})"
    return fix


def _union_end(model: type[BaseModel], loc: tuple[Any, ...]) -> int | None:
    """Where an error location leaves the config's fields for a branch of a plain union field
    (``bool | Literal['auto']`` gives locations ``...distributed.bool`` and
    ``...distributed.literal['auto']``): the length of the field's own path, else None."""
    current: type[BaseModel] | None = model
    for i, part in enumerate(loc):
        if isinstance(part, int):
            continue
        field = current.model_fields.get(str(part)) if current else None
        if field is None:
            return None
        if i + 1 < len(loc) and len(get_args(field.annotation)) > 1 and nested_model(field.annotation) is None:
            return i + 1
        current = nested_model(field.annotation)
    return None


# A union branch's tag in a pydantic error location, as a person would write the value.
_BRANCH_WORDS = {"bool": "true or false", "int": "a whole number", "float": "a number", "str": "a string",
                 "none": "null", "list": "a list", "dict": "a mapping"}


def _describe_union(model: type[BaseModel], loc: tuple[Any, ...], errs: list[dict[str, Any]]) -> str:
    """One line for a value that no branch of a union field takes: what each branch accepts."""
    holder = _model_at(model, loc[:-1])
    field = holder.model_fields.get(str(loc[-1])) if holder else None
    accepts = []
    for err in errs:
        tag = str(err["loc"][len(loc)])
        expected = (err.get("ctx") or {}).get("expected")
        word = expected if err["type"] == "literal_error" and expected else _BRANCH_WORDS.get(tag.split("[")[0], tag)
        if word not in accepts:
            accepts.append(word)
    desc = f" ({field.description})" if field is not None and field.description else ""
    default = getattr(field, "default", None)
    default_text = f" (default {default!r})" if isinstance(default, (int, float, str, bool)) else ""
    return (f"{'.'.join(map(str, loc))}: got {errs[0].get('input')!r}. Fix: set it to "
            f"{' or '.join(accepts)}{default_text}{desc}")


def validate(model: type[T], data: dict[str, Any], source: str = "config") -> T:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems: list[str | tuple[Any, ...]] = []  # a union field's place is its location
        unions: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
        for err in exc.errors():
            end = _union_end(model, tuple(err["loc"]))
            if end is None:
                problems.append(_describe(model, err))
            else:
                if tuple(err["loc"][:end]) not in unions:
                    problems.append(tuple(err["loc"][:end]))
                unions.setdefault(tuple(err["loc"][:end]), []).append(err)
        lines = [p if isinstance(p, str) else _describe_union(model, p, unions[p]) for p in problems]
        raise ConfigError(source, lines) from None


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (PyYAML keeps the last
    silently, so ``train: {lr: 0.5}`` followed by ``train: {epochs: 3}`` would lose the lr)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} appears twice in one mapping; merge the two entries",
                    key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_config(
    path: str | Path | None = None,
    overrides: list[str] | None = None,
    model: type[T] = SteperConfig,  # type: ignore[assignment]
) -> T:
    """Load ``path`` (YAML; None means the defaults), apply overrides, validate everything once."""
    problems: list[str] = []
    data: dict[str, Any] = {}
    source = str(path) if path else "built-in defaults"
    if path is not None:
        p = Path(path)
        if not str(path).strip():
            raise ConfigError("--config", ["the config file path is empty; pass a YAML file, or leave "
                                           "--config out for the built-in defaults"])
        if p.is_dir():
            raise ConfigError(source, [f"config file {p} is a directory; pass a YAML file"])
        if not p.is_file():
            raise ConfigError(source, [f"config file {p} does not exist; pass an existing YAML file"])
        try:
            loaded = yaml.load(p.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader) or {}
        except UnicodeDecodeError as exc:
            raise ConfigError(source, [f"{p} is not UTF-8 text ({exc.reason} at byte {exc.start}); "
                                       "save it as UTF-8 YAML"]) from None
        except yaml.YAMLError as exc:
            raise ConfigError(source, [f"{p} is not valid YAML: {exc}"]) from None
        if not isinstance(loaded, dict):
            raise ConfigError(source, [f"{p} must hold a mapping of sections, not {type(loaded).__name__}"])
        data = loaded
    tree, override_problems = parse_overrides(list(overrides or []))
    problems += override_problems
    if overrides:  # a bad value may be the command line's, not the file's
        source += " with command-line overrides"
    data = _merge(data, tree, problems)
    try:
        cfg = validate(model, data, source)
    except ConfigError as exc:
        raise ConfigError(source, problems + exc.problems) from None
    if problems:
        raise ConfigError(source, problems)
    return cfg


def dump_config(cfg: BaseModel) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
