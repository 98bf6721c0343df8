"""User-facing errors: the CLI prints their message (with the fix) instead of a traceback."""


class UserError(Exception):
    """A problem the user can fix: bad input file, bad config, missing or broken index."""


class DataError(UserError):
    """A dataset or corpus file that cannot be read at all (single bad records are counted)."""


class IndexLoadError(UserError):
    """A missing, partial or corrupt index directory."""


class LossNotFinite(UserError):
    """Training's step loss became inf or NaN: the settings (learning rates, loss weights) make it
    diverge. Raised on every rank alike, before the step is checkpointed."""


class ResumableInterrupt(KeyboardInterrupt):
    """Ctrl-C during work that a rerun of the same command resumes; its message says where the
    finished work is kept (the CLI prints it after 'interrupted')."""


def user_error_in(exc: BaseException) -> UserError | None:
    """The UserError that ``exc`` is or carries: itself, one in its cause/context chain, or one
    of a Ray Train ``WorkerGroupError``'s ``worker_failures`` (rank -> exception); else None."""
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo:
        e = todo.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, UserError):
            return e
        todo += [c for c in (e.__cause__, e.__context__, getattr(e, "cause", None)) if isinstance(c, BaseException)]
        failures = getattr(e, "worker_failures", None)
        if isinstance(failures, dict):
            todo += [f for _, f in sorted(failures.items(), reverse=True) if isinstance(f, BaseException)]
    return None
