"""Dataset readers, question records and corpus extraction."""

from steper_ray.data.corpus import CorpusRead, CorpusScan, extract_corpus, passage_id, read_corpus
from steper_ray.data.readers import read_dataset
from steper_ray.data.records import BadRecord, Passage, QuestionRecord, ReadResult

__all__ = [
    "BadRecord",
    "CorpusRead",
    "CorpusScan",
    "Passage",
    "QuestionRecord",
    "ReadResult",
    "extract_corpus",
    "passage_id",
    "read_corpus",
    "read_dataset",
]
