"""Draws docs/architecture.png (the README's architecture diagram): `python docs/architecture.py`."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch  # noqa: E402

BOXES = {
    # name: (x, y, w, h, title, body, colour)
    "data": (0.2, 6.2, 2.6, 1.5, "Datasets", "HotpotQA · 2Wiki · MuSiQue\nreaders, corpus extraction", "#e8eef7"),
    "index": (0.2, 3.9, 2.6, 1.6, "index", "BM25 (bm25s) or dense\n(MiniLM + FAISS)\nsaved index dirs", "#e8eef7"),
    "generate": (3.4, 5.6, 3.6, 2.3, "generate · Ray Data", "actor pool: teacher on vLLM\n(70B, tensor parallel 4)\n+ retriever + StepwiseReasoner\nfilter (EM/F1/contains)", "#fdf0d5"),
    "examples": (3.4, 3.6, 3.6, 1.4, "step examples (Parquet)", "init · exp · agg\nprompt = student prompt", "#fdf0d5"),
    "train": (7.6, 5.6, 3.6, 2.3, "train · Ray Train", "DeepSpeed ZeRO-2/3 workers\nL = Σ exp(-s_j) L_j / 2 + s_j / 2\ncheckpoints, resume, export", "#e3f4e1"),
    "student": (7.6, 3.6, 3.6, 1.4, "student (HF directory)", "8B on GPU · tiny Llama on CPU", "#e3f4e1"),
    "evaluate": (11.8, 5.6, 3.2, 2.3, "evaluate · Ray Data", "student + StepwiseReasoner\nEM / F1 / Acc / recall\nreports across runs", "#f3e5f5"),
    "serve": (11.8, 0.4, 3.2, 4.6, "serve · Ray Serve", "", "#fde2e2"),
}
SERVE_PARTS = [
    (12.0, 3.3, 2.8, 1.0, "Ingress (FastAPI)", "/v1/answer · SSE · auth"),
    (12.0, 1.95, 2.8, 1.0, "Reasoner", "vLLM async / transformers"),
    (12.0, 0.6, 2.8, 1.0, "Retriever", "own deployment, CPU"),
]
ARROWS = [  # edge to edge, clear of the text
    ((1.5, 6.2), (1.5, 5.55)),      # data -> index
    ((2.8, 7.0), (3.4, 7.0)),       # data -> generate (questions)
    ((2.8, 4.7), (3.4, 5.8)),       # index -> generate
    ((5.2, 5.6), (5.2, 5.05)),      # generate -> examples
    ((7.0, 4.3), (7.6, 5.8)),       # examples -> train
    ((9.4, 5.6), (9.4, 5.05)),      # train -> student
    ((11.2, 4.6), (11.8, 5.8)),     # student -> evaluate
    ((11.2, 3.9), (12.0, 2.6)),     # student -> serve (reasoner)
]


def _box(ax, x, y, w, h, title, body, colour):  # type: ignore[no-untyped-def]
    ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.05,rounding_size=0.12",
                                fc=colour, ec="#444444", lw=1.2))
    ax.text(x + w / 2, y + h - 0.25, title, ha="center", va="top", fontsize=10.5, weight="bold")
    if body:
        ax.text(x + w / 2, y + h - 0.62, body, ha="center", va="top", fontsize=8.5, linespacing=1.35)


def main(out: Path) -> None:
    fig, ax = plt.subplots(figsize=(15.5, 8.4))
    ax.set(xlim=(0, 15.3), ylim=(0, 8.3))
    ax.axis("off")
    for name, spec in BOXES.items():
        _box(ax, *spec)
    for x, y, w, h, title, body in SERVE_PARTS:
        _box(ax, x, y, w, h, title, body, "#ffffff")
    for x0, y0, x1, y1 in [(13.4, 3.3, 13.4, 2.98), (13.4, 1.95, 13.4, 1.63)]:
        ax.add_patch(FancyArrowPatch((x0, y0), (x1, y1), arrowstyle="-|>", mutation_scale=14, lw=1.2))
    for start, end in ARROWS:
        ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=16, lw=1.4, color="#333333"))
    ax.text(0.2, 2.9, "One loop, three callers: the same StepwiseReasoner (retrieve with the\n"
            "question, then with the last sentence; one sentence per step; the answer at\n"
            "the agg step) runs teacher generation, evaluation and serving, and one prompt\n"
            "builder makes the student's training and inference prompts byte-identical.\n\n"
            "Every stage: steper-ray <stage> --config FILE, or\n"
            "ray job submit --working-dir . -- python jobs/<stage>.py --config FILE;\n"
            "steper-ray pipeline runs them all, resumable by stage.",
            fontsize=9, va="top", family="monospace")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main(Path(__file__).with_name("architecture.png"))
