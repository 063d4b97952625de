"""Errors raised by the flywheel library.

    FlywheelError             base class: every error the library raises on purpose
    ├── BadInput              an argument, file or value is not what was expected
    │   ├── CodeExists        a taxonomy entry with that code already exists
    │   └── NeedsConfirmation the change needs an explicit confirmation
    ├── NotFound              a named thing does not exist
    │   ├── TraceNotFound
    │   ├── CodeNotFound      no taxonomy entry with that code
    │   └── NothingToUndo     the user has no label left to undo
    ├── PermissionDenied      the user's role may not do this
    ├── JudgeError            the LLM judge cannot run (no key, refused, unavailable)
    ├── EmbeddingError        the embedding model's process failed or could not load the model
    ├── StoreError            the database cannot be opened or written
    │   ├── ForeignDatabase   the file is a database of another application
    │   ├── NewerDatabase     a newer Flywheel upgraded the database past what this code knows
    │   └── StoreBusy         another change held the database longer than a writer waits
    ├── AlreadyReviewed       another reviewer decided on this scrub first
    ├── ScrubClaimed          another reviewer holds the scrub
    └── StaleClaim            a lapsed claim that someone else has since taken over

Pages translate these into ``st.error``; the CLI into one line on stderr and exit code 2.
"""


class FlywheelError(Exception):
    """Base class for errors the library raises on purpose."""


class BadInput(FlywheelError):
    """An argument, file or value is not what was expected."""


class CodeExists(BadInput):
    """A taxonomy entry with that code already exists."""


class NeedsConfirmation(BadInput):
    """The change drops a checksum- or format-verified redaction; repeat it with confirmation."""


class NotFound(FlywheelError):
    """A named thing does not exist."""


class TraceNotFound(NotFound):
    """No trace with that id."""


class CodeNotFound(NotFound):
    """No taxonomy entry with that code."""


class NothingToUndo(NotFound):
    """The user has no label left to undo."""


class PermissionDenied(FlywheelError):
    """The user's role may not do this."""


class StoreError(FlywheelError):
    """The database cannot be opened or written."""


class ForeignDatabase(StoreError):
    """The file is a SQLite database of another application; it is never migrated."""


class NewerDatabase(StoreError):
    """A newer Flywheel upgraded the database with migrations this code does not know; never used."""


class StoreBusy(StoreError):
    """Another change (a large import) held the database longer than a writer waits; nothing was saved."""


class AlreadyReviewed(FlywheelError):
    """Another reviewer decided on this scrub first."""


class ScrubClaimed(FlywheelError):
    """Another reviewer holds this scrub; an action applies only to the scrub its reviewer was shown."""


class StaleClaim(FlywheelError):
    """The claim lapsed and someone else has since claimed or labeled the item; nothing was saved."""


class EmbeddingError(FlywheelError):
    """The embedding model's process failed or could not load the model."""


class JudgeError(FlywheelError):
    """The judge cannot run: no API key, the API refused the credentials, or it stayed unavailable."""
