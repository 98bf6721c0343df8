"""Do two rankings agree on their top-k? Exact score ties at the cut-off are not disagreements."""

from __future__ import annotations

from steper_ray.retrieval.protocol import Hit


def topk_agree(a: list[Hit], b: list[Hit], rel_tol: float = 1e-4) -> bool:
    """True when both lists hold the same passages, or differ only where scores tie.

    Passages may swap places inside a tie; a passage in one list and not the other is allowed
    only if its score equals the lowest score shown (another passage with that score could
    have been cut instead).
    """
    if len(a) != len(b):
        return False
    if [h.id for h in a] == [h.id for h in b]:
        return True
    if not a:
        return True

    def close(x: float, y: float) -> bool:
        return abs(x - y) <= rel_tol * max(1.0, abs(x), abs(y))

    # Same scores position by position: reorderings are then ties.
    if not all(close(x.score, y.score) for x, y in zip(a, b)):
        return False
    only_a = {h.id for h in a} - {h.id for h in b}
    only_b = {h.id for h in b} - {h.id for h in a}
    floor_score = min(a[-1].score, b[-1].score)
    return all(close(h.score, floor_score) for h in a + b if h.id in only_a | only_b)
