"""A NoiseSampler for tests: hands out the noise the test chose and records what was asked.

Releases take their randomness through :class:`psi_share.privacy.NoiseSampler`;
a node reads ``Node.noise_sampler`` per release, so a test sets this there and
checks the released figure is exactly truth + the noise it injected.
"""

from __future__ import annotations


class Injected:
    """Discrete Laplace draws from ``noise`` (in order), Gaussian shares from ``shares``;
    ``scales`` and ``sigmas`` record the scale asked for at each draw. A draw of a kind the
    test did not expect fails it."""

    def __init__(self, *noise: int, shares: tuple[int, ...] = ()) -> None:
        self.noise, self.shares = list(noise), list(shares)
        self.scales: list[float] = []
        self.sigmas: list[float] = []

    def discrete_laplace(self, scale: float) -> int:
        self.scales.append(scale)
        assert self.noise, "an unexpected discrete Laplace draw"
        return self.noise.pop(0)

    def discrete_gaussian(self, sigma: float) -> int:
        self.sigmas.append(sigma)
        assert self.shares, "an unexpected discrete Gaussian draw"
        return self.shares.pop(0)
