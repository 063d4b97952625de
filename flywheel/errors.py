"""Errors raised by the flywheel library.

    FlywheelError             base class: every error the library raises on purpose
    ├── BadInput              an argument, file or value is not what was expected
    │   └── NeedsConfirmation  the change needs an explicit confirmation
    ├── NotFound              a named thing does not exist
    │   └── TraceNotFound
    ├── PermissionDenied      the user's role may not do this
    ├── AlreadyReviewed       a scrub was decided by someone first
    ├── ScrubClaimed          another reviewer holds the scrub
    └── StoreError            the database cannot be opened or written

Pages translate these into ``st.error``; the CLI into one line on stderr and exit code 2.
"""


class FlywheelError(Exception):
    """Base class for errors the library raises on purpose."""


class BadInput(FlywheelError):
    """An argument, file or value is not what was expected."""


class NotFound(FlywheelError):
    """A named thing does not exist."""


class TraceNotFound(NotFound):
    """No trace with that id."""


class PermissionDenied(FlywheelError):
    """The user's role may not do this."""


class StoreError(FlywheelError):
    """The database cannot be opened or written."""


class AlreadyReviewed(FlywheelError):
    """Another reviewer decided on this scrub first."""


class ScrubClaimed(FlywheelError):
    """Another reviewer holds this scrub; an action applies only to the scrub its reviewer was shown."""


class NeedsConfirmation(BadInput):
    """The change drops a checksum- or format-verified redaction; repeat it with confirmation."""
