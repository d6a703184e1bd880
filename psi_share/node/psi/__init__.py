"""The PSI wing: both sides of a private set intersection (requester, responder)."""
