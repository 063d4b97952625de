"""Errors raised by the flywheel library.

    FlywheelError             base class: every error the library raises on purpose
    ├── BadInput              an argument, file or value is not what was expected
    ├── NotFound              a named thing does not exist
    │   └── TraceNotFound
    ├── PermissionDenied      the user's role may not do this
    ├── JudgeError            the LLM judge cannot run (no key, refused, unavailable)
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


class JudgeError(FlywheelError):
    """The judge cannot run: no API key, the API refused the credentials, or it stayed unavailable."""
