"""Privacy: finding and erasing a data subject, retention of raw text."""
