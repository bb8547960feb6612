"""Noise schedules: the linear VP-SDE with DCTdiff's SNR scaling (spec dctdiff §6) and the rectified-flow
schedule of JiT (`FlowSchedule`, spec spectral §2.2, §3).

Base process, t in [0, 1] (dimensionless), beta_min = b0, beta_max = b1:

    beta(t)      = b0 + (b1 - b0) t
    A(t)         = int_0^t beta = b0 t + (b1 - b0) t^2 / 2
    alpha_bar(t) = exp(-A(t))

SNR scaling by c = `snr_scale` (c = 1 is the plain VP-SDE):

    alpha_bar_c  = c alpha_bar / (1 + (c - 1) alpha_bar)
    A_c          = -log alpha_bar_c = A + log1p((c - 1) e^{-A}) - log c
    sigma^2      = 1 - alpha_bar_c = -expm1(-A) / (1 + (c - 1) e^{-A})
    SNR_c        = alpha_bar_c / sigma^2 = c / expm1(A) = c SNR
    alpha        = sqrt(alpha_bar_c),   log alpha = -A_c / 2
    lambda       = log alpha - log sigma = (log c - log expm1(A)) / 2       (half log-SNR)
    t(lambda)    = (sqrt(b0^2 + 2 (b1 - b0) A) - b0) / (b1 - b0),  A = log(1 + c e^{-2 lambda})
    beta_c       = d A_c / dt = -d log alpha_bar_c / dt = beta / (1 + (c - 1) alpha_bar)

beta_c follows from differentiating A_c: d/dt log1p((c-1) e^{-A}) = -(c-1) e^{-A} beta / (1 + (c-1) e^{-A}),
so dA_c/dt = beta (1 - (c-1) e^{-A} / (1 + (c-1) e^{-A})) = beta / (1 + (c-1) alpha_bar). The scaled
process is again a VP-SDE, dx = -beta_c x dt / 2 + sqrt(beta_c) dw, whose marginal is
x_t = alpha x0 + sigma eps. The Euler samplers (§9.2) use this beta_c.

Network time convention (spec §7, §9): every objective and sampler in `dctjax.diffusion` calls the model
as `model_fn(x_t, t)` with **continuous** t in [0, 1], shape (B,). The network itself multiplies by
`NETWORK_TIME_SCALE` (use `network_time(t)`) before its time embedding, so tau = 999 t as in the reference.

All methods are pure jnp, vectorised over t (any shape), and keep t's floating dtype (float32 unless t is
float64). They use log1p/expm1 so that sigma, lambda and beta_c stay accurate in float32 near t = 0.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

NETWORK_TIME_SCALE = 999.0


def network_time(t: jax.Array) -> jax.Array:
    """Time input of the network, tau = 999 t (the reference convention). t: continuous, in [0, 1]."""
    return NETWORK_TIME_SCALE * t


def _as_float(t) -> jax.Array:
    t = jnp.asarray(t)
    return t if jnp.issubdtype(t.dtype, jnp.floating) else t.astype(jnp.float32)


def broadcast_to_data(coef: jax.Array, x: jax.Array) -> jax.Array:
    """Append trailing unit axes so a per-sample coefficient (B,) (or a scalar) broadcasts against x (B, ...)."""
    coef = jnp.asarray(coef)
    return coef.reshape(coef.shape + (1,) * (x.ndim - coef.ndim))


@dataclasses.dataclass(frozen=True)
class VPSchedule:
    """Linear VP-SDE with SNR scale c (spec §6). Hashable, so it can be a static argument or a closure.

    Attributes:
      beta_min: b0 = beta(0).
      beta_max: b1 = beta(1).
      snr_scale: c > 0; SNR_c(t) = c SNR(t). c > 1 means less noise at every t.
    """

    beta_min: float = 0.1
    beta_max: float = 20.0
    snr_scale: float = 1.0

    def __post_init__(self):
        if not 0.0 <= self.beta_min < self.beta_max:
            raise ValueError(f"need 0 <= beta_min < beta_max, got {self.beta_min}, {self.beta_max}")
        if not self.snr_scale > 0.0:
            raise ValueError(f"snr_scale must be > 0, got {self.snr_scale}")

    # ---- base process ----------------------------------------------------------------------------
    def beta(self, t) -> jax.Array:
        """beta(t) = b0 + (b1 - b0) t of the unscaled process."""
        t = _as_float(t)
        return self.beta_min + (self.beta_max - self.beta_min) * t

    def integral(self, t) -> jax.Array:
        """A(t) = int_0^t beta = b0 t + (b1 - b0) t^2 / 2."""
        t = _as_float(t)
        return self.beta_min * t + 0.5 * (self.beta_max - self.beta_min) * t * t

    def alpha_bar(self, t) -> jax.Array:
        """Unscaled alpha_bar(t) = exp(-A(t))."""
        return jnp.exp(-self.integral(t))

    # ---- SNR-scaled process ----------------------------------------------------------------------
    def _log1p_shift(self, a: jax.Array) -> jax.Array:
        """log(1 + (c - 1) e^{-A})."""
        return jnp.log1p((self.snr_scale - 1.0) * jnp.exp(-a))

    def integral_c(self, t) -> jax.Array:
        """A_c(t) = -log alpha_bar_c(t) = A + log(1 + (c - 1) e^{-A}) - log c."""
        a = self.integral(t)
        return a + self._log1p_shift(a) - math.log(self.snr_scale)

    def log_alpha_bar_c(self, t) -> jax.Array:
        """log alpha_bar_c(t) = -A_c(t)."""
        return -self.integral_c(t)

    def alpha_bar_c(self, t) -> jax.Array:
        """alpha_bar_c = c alpha_bar / (1 + (c - 1) alpha_bar)."""
        return jnp.exp(self.log_alpha_bar_c(t))

    def beta_c(self, t) -> jax.Array:
        """beta_c(t) = -d log alpha_bar_c / dt = beta(t) / (1 + (c - 1) alpha_bar(t))."""
        return self.beta(t) / (1.0 + (self.snr_scale - 1.0) * self.alpha_bar(t))

    def log_alpha(self, t) -> jax.Array:
        """log alpha_t = -A_c(t) / 2."""
        return -0.5 * self.integral_c(t)

    def alpha(self, t) -> jax.Array:
        """alpha_t = sqrt(alpha_bar_c(t)), the signal coefficient of x_t = alpha x0 + sigma eps."""
        return jnp.exp(self.log_alpha(t))

    def sigma_sq(self, t) -> jax.Array:
        """sigma_t^2 = 1 - alpha_bar_c = (1 - alpha_bar) / (1 + (c - 1) alpha_bar), via expm1."""
        a = self.integral(t)
        return -jnp.expm1(-a) / (1.0 + (self.snr_scale - 1.0) * jnp.exp(-a))

    def sigma(self, t) -> jax.Array:
        """sigma_t = sqrt(1 - alpha_t^2), the noise coefficient."""
        return jnp.sqrt(self.sigma_sq(t))

    def log_sigma(self, t) -> jax.Array:
        """log sigma_t (-inf at t = 0)."""
        a = self.integral(t)
        return 0.5 * (jnp.log(-jnp.expm1(-a)) - self._log1p_shift(a))

    def marginal_lambda(self, t) -> jax.Array:
        """lambda_t = log alpha_t - log sigma_t = (log c - log expm1(A)) / 2, half the log-SNR (+inf at t=0).

        Named as in DPM-Solver. log expm1(A) is evaluated as A + log(-expm1(-A)), stable for all A > 0.
        """
        a = self.integral(t)
        return 0.5 * (math.log(self.snr_scale) - a - jnp.log(-jnp.expm1(-a)))

    def log_snr(self, t) -> jax.Array:
        """log SNR_c(t) = log(alpha^2 / sigma^2) = 2 lambda_t = log c + log SNR(t)."""
        return 2.0 * self.marginal_lambda(t)

    def inverse_lambda(self, lam) -> jax.Array:
        """t(lambda), the closed-form inverse of `marginal_lambda` (spec §6).

        A = log(1 + c e^{-2 lambda}) (a softplus, no overflow for very negative lambda), then the positive root of
        (b1 - b0) t^2 / 2 + b0 t - A = 0, written as 2A / (b0 + sqrt(b0^2 + 2 (b1 - b0) A)) to avoid
        cancellation in float32 near t = 0. lambda = +inf maps to t = 0.
        """
        lam = _as_float(lam)
        a = jax.nn.softplus(math.log(self.snr_scale) - 2.0 * lam)
        db = self.beta_max - self.beta_min
        return 2.0 * a / (self.beta_min + jnp.sqrt(self.beta_min**2 + 2.0 * db * a))

    # ---- forward marginal ------------------------------------------------------------------------
    def q_sample(self, x0: jax.Array, t, eps: jax.Array) -> jax.Array:
        """x_t = alpha_t x0 + sigma_t eps. x0, eps: (B, ...); t: (B,) or scalar (broadcast over trailing axes)."""
        alpha = broadcast_to_data(self.alpha(t), x0)
        sigma = broadcast_to_data(self.sigma(t), x0)
        return alpha * x0 + sigma * eps


@dataclasses.dataclass(frozen=True)
class FlowSchedule:
    """Rectified flow of JiT (spec spectral §2.2, §3.1): **t = 0 is pure noise, t = 1 is data** (the opposite
    of `VPSchedule`, where t = 1 is noise).

        z_t = t x + (1 - t) eps,   eps = noise_scale N(0, I),   velocity v = dz_t/dt = x - eps.

    Flow samplers (`samplers.heun`, `samplers.euler_flow`) call model_fn(z, t) -> v-hat with t (B,) in [0, 1];
    x-prediction networks are wrapped by `objectives.x_to_velocity`, v-hat = (x-hat - z) / max(1 - t, t_eps).

    Attributes:
      noise_scale: std of eps (1.0 at 256 px, 2.0 at 512 px in JiT). Callers draw z at t = 0 as
        noise_scale N(0, I) themselves; the samplers only use it through the model.
      t_eps: clamp of 1 - t in the x -> v conversion (JiT: 0.05).
    """

    noise_scale: float = 1.0
    t_eps: float = 0.05

    def __post_init__(self):
        if not self.noise_scale > 0.0:
            raise ValueError(f"noise_scale must be > 0, got {self.noise_scale}")
        if not 0.0 < self.t_eps < 1.0:
            raise ValueError(f"t_eps must be in (0, 1), got {self.t_eps}")

    def q_sample(self, x: jax.Array, t, noise: jax.Array) -> jax.Array:
        """z_t = t x + (1 - t) noise_scale noise. x, noise (N(0, I)): (B, ...); t: (B,) or scalar."""
        t = broadcast_to_data(_as_float(t), x)
        return t * x + (1.0 - t) * (self.noise_scale * noise)
