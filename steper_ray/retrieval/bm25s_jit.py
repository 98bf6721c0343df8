"""bm25s' numba scorer, compiled once per machine instead of once per process.

bm25s jit-compiles its top-k scorer on first use without numba's on-disk cache, so every fresh
process (each one-off ``steper-ray retrieve``, each Ray actor) spends ~10 s compiling it. Here
the same Python function is re-jitted with ``cache=True``: the first process writes the machine
code next to bm25s' source (or, where that is read-only, to numba's user cache directory or
``$NUMBA_CACHE_DIR``), later ones load it. Numba keys the cache by signature, CPU and the
source file's timestamp, so another machine or a bm25s upgrade compiles afresh.
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)

_patched = False


def cache_compiled_scorer() -> bool:
    """Make bm25s' serial numba scorer cache its compiled code on disk; True when in place.

    Idempotent. Only the serial scorer (what ``n_threads=0`` uses) is replaced: numba's cache
    key has no compile flags, so a parallel variant of the same function would share (and
    clash with) its cache entries. If bm25s changes its internals this does nothing and
    bm25s compiles as before.
    """
    global _patched
    if _patched:
        return True
    try:
        from bm25s.numba import retrieve_utils
        from numba import njit

        plain = retrieve_utils._retrieve_internal_jitted
        retrieve_utils._retrieve_internal_jitted_serial  # noqa: B018  # the name we replace must exist
    except (ImportError, AttributeError) as exc:
        log.debug("bm25s numba scorer not cached (%s): it compiles in every process", exc)
        return False
    retrieve_utils._retrieve_internal_jitted_serial = njit(nogil=True, cache=True)(plain)
    _patched = True
    return True
