"""Review: machine scrubs, a reviewer's sign-off, the approved-text read path and the label queue."""
