"""Node wiring: config, home, responder, requester, jobs."""
