"""The intersection-sum wing: requester, responder, and the Paillier keyring
with its pool and prepared blinded sets."""
