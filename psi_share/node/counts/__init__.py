"""Count-only that the responder enforces (the cardinality protocol): both sides
of it, the session-sets a responder keeps ready, and its audit message checks."""
