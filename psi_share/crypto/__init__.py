"""Cryptographic helpers: OpenMined PSI driven in parallel, P-256 blinding,
fast Paillier for the key owner, key generation."""


def split_spans(n: int, parts: int) -> list[tuple[int, int]]:
    """Split ``range(n)`` into ``parts`` (at least one) contiguous
    ``(start, end)`` spans whose sizes differ by at most one."""
    parts = max(1, parts)
    step, extra = divmod(n, parts)
    spans, start = [], 0
    for i in range(parts):
        end = start + step + (1 if i < extra else 0)
        spans.append((start, end))
        start = end
    return spans
