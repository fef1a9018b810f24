"""User-facing errors: the CLI prints their message as one line and exits non-zero, with no traceback."""


class VidrestoreError(Exception):
    """A problem the user can fix (bad input, missing weights, no network); its message says how."""

    exit_code = 2


class WeightsError(VidrestoreError):
    """A weight file is missing, corrupt, or could not be downloaded."""

    exit_code = 3


class ClusterError(VidrestoreError):
    """Ray is missing or unreachable, or no Ray worker could start (the batch's Ray executors)."""
