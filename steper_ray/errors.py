"""User-facing errors: the CLI prints their message (with the fix) instead of a traceback."""


class UserError(Exception):
    """A problem the user can fix: bad input file, bad config, missing or broken index."""


class DataError(UserError):
    """A dataset or corpus file that cannot be read at all (single bad records are counted)."""


class IndexLoadError(UserError):
    """A missing, partial or corrupt index directory."""
