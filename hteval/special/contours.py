"""Steepest-descent contours for Tricomi's U on its branch cut, precomputed once per aspect ratio.

With b = kappa/2, gamma = M/N and s = x/scale, substituting t = -tau = -e^w in U's Laplace integral gives

    Gamma(b) |U(b, -a, -y)| = |I(s)|,   I(s) = int_C exp(b h(w)) dw,
    h(w) = w - (s/gamma) e^w - (1/gamma) log(1 - e^w),

where C runs from Re w = -inf to Re w = +inf inside the strip 0 < Im w < pi (tau passes above tau = 1). The large
parameter b factors out exactly, so the steepest-descent path of h depends on (s, gamma) only and can be computed
once per layer; for any kappa, I(s) is then a sum of precomputed weights times exp(b (h_j - h*)) with Re h_j <= h*.
No cancellation occurs for any kappa, which is what makes the large-kappa bulk (where every series fails) exact.

The saddles are the roots of s tau^2 + (1 - gamma - s) tau + gamma = 0: a complex pair exactly inside the
Marchenko-Pastur bulk, two real roots outside it. This module is plain numpy: it runs once per layer, not per
likelihood evaluation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_GL_X, _GL_W = np.polynomial.legendre.leggauss(8)
#: Beyond this drop of Re h below the saddle value, a branch is replaced by its analytic tail (left) or ignored
#: (right, where exp(b h) then decays faster than exp(-b * R) for every b >= B_MIN).
_R_LEFT = 60.0
B_MIN = 5e-4  # kappa >= 1e-3
_R_RIGHT = 60.0 / B_MIN
_SIGMA_NEAR = 1.0  # arclength traced from a saddle before switching to the sqrt(drop) parameter


@dataclass(frozen=True)
class Resolution:
    """How finely the paths are traced: RK4 substeps between arclength nodes, the first arclength panel at a
    saddle, and the Newton continuation's substeps and iterations on the far branches."""

    rk4_substeps: int = 4
    first_panel: float = 0.004
    newton_substeps: int = 3
    newton_iters: int = 3


#: the likelihood's tables: log f to ~1e-9
FINE = Resolution()
#: figures: half the work, log f within 3e-8 of FINE (hteval.special.onepoint)
FIGURE = Resolution(rk4_substeps=2, first_panel=0.02, newton_substeps=2, newton_iters=2)


@dataclass(frozen=True)
class Contours:
    """Quadrature of I(s) at a set of points s for one gamma.

    I(s_k) = exp(b h*_k) [ sum_j c_kj exp(b dh_kj) + exp(b tail_k) / b ]

    with dh = h - h* (Re dh <= 0 on the path) and tail the value of w - h* where the left branch hands over to the
    analytic tail int_{-inf} exp(b (w - h*)) dw.
    """

    s: np.ndarray  # (K,)
    gamma: float
    h_star: np.ndarray  # (K,) complex: h at the dominant saddle
    dh: np.ndarray  # (K, Q) complex
    c: np.ndarray  # (K, Q) complex quadrature weight times dw/dparam
    tail: np.ndarray  # (K,) complex


def _h(w, s, g):
    t = np.exp(w)
    return w - (s / g) * t - np.log1p(-t) / g


def _dh(w, s, g):
    # 1 + t / (g (1 - t)) combined into one fraction: at |t| >> 1 (gamma near 1, s -> 0) the two terms cancel.
    t = np.exp(w)
    return (g + (1.0 - g) * t) / (g * (1.0 - t)) - (s / g) * t


def _d2h(w, s, g):
    t = np.exp(w)
    return -(s / g) * t + t / (g * (1.0 - t) ** 2)


def _panels(start: float, stop: float, first: float, ratio: float = 2.0) -> tuple[np.ndarray, np.ndarray]:
    """Gauss-Legendre nodes on panels growing geometrically away from `start` (where the integrand peaks)."""
    edges = [start, start + first]
    while edges[-1] < stop:
        edges.append(start + (edges[-1] - start) * ratio)
    edges = np.minimum(np.array(edges), stop)
    lo, hi = edges[:-1], edges[1:]
    x = (lo + hi)[:, None] / 2 + (hi - lo)[:, None] / 2 * _GL_X
    wts = (hi - lo)[:, None] / 2 * _GL_W
    return x.ravel(), wts.ravel()


def _rk4_trace(w0, sigma_nodes, s, g, substeps=4):
    """Trace the steepest-descent path at unit speed from w0 (vectorised over rows); positions at sigma_nodes."""

    def f(w):
        d = _dh(w, s, g)
        return -np.conj(d) / np.abs(d)

    out_w = np.empty((w0.size, sigma_nodes.size), complex)
    w, sig = w0.copy(), 0.0
    for j, target in enumerate(sigma_nodes):
        step = (target - sig) / substeps
        for _ in range(substeps):
            k1 = f(w)
            k2 = f(w + step / 2 * k1)
            k3 = f(w + step / 2 * k2)
            k4 = f(w + step * k3)
            w = w + step / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        sig = target
        out_w[:, j] = w
    return out_w


def _newton_on_level(w_start, u_nodes, h_ref, s, g, substeps=3, iters=3):
    """Points of the steepest-descent path where h = h_ref - u^2, by continuation in u from w_start.

    Each substep predicts with the path's tangent dw/du = -2u / h'(w), then corrects with Newton.
    """
    out_w = np.empty((w_start.size, u_nodes.shape[1]), complex)
    w = w_start.copy()
    u_prev = np.sqrt(np.maximum(np.real(h_ref - _h(w, s, g)), 0.0))
    for j in range(u_nodes.shape[1]):
        u_target = u_nodes[:, j]
        for k in range(1, substeps + 1):
            u = u_prev + (u_target - u_prev) * k / substeps
            u_last = u_prev + (u_target - u_prev) * (k - 1) / substeps
            w = w - 2 * u_last * (u - u_last) / _dh(w, s, g)
            target = h_ref - u**2
            for _ in range(iters):
                w = w - (_h(w, s, g) - target) / _dh(w, s, g)
        u_prev = u_target
        out_w[:, j] = w
    return out_w


def _near(w0, phi, s, g, res: Resolution = FINE):
    """Arclength nodes of a branch leaving the saddle w0 in direction phi (smooth for simple or near-degenerate
    saddles alike), and the branch point at arclength _SIGMA_NEAR where the far part takes over.

    The traced points are polished onto the level set Im h = Im h(w0) so that exp(b (h - h*)) is real at every
    node: the phase drift of the integrator would otherwise be multiplied by b.
    """
    sig, sig_w = _panels(0.0, _SIGMA_NEAR, res.first_panel)
    w = _rk4_trace(w0 + 1e-12 * np.exp(1j * phi), np.append(sig, _SIGMA_NEAR), s, g, res.rk4_substeps)
    im_ref = np.imag(_h(w0, s, g))[:, None]
    sc = s[:, None]
    for _ in range(2):
        hw = _h(w, sc, g)
        w = w - 1j * (np.imag(hw) - im_ref) / _dh(w, sc, g)
    w, w_end = w[:, :-1], w[:, -1]
    d = _dh(w, sc, g)
    return w, sig_w * (-np.conj(d) / np.abs(d)), w_end


def _far(w_start, h_ref, s, g, r_max, res: Resolution = FINE):
    """Nodes of a branch from w_start on, in u = sqrt(h_ref - h), where exp(b (h - h_ref)) = exp(-b u^2).

    Returns nodes, weights and the branch point at u = sqrt(r_max).
    """
    u0 = np.sqrt(np.maximum(np.real(h_ref - _h(w_start, s, g)), 1e-300))
    u_max = np.sqrt(r_max)
    rows = [_panels(u, max(u_max, 2 * u), max(u, 1e-4)) for u in u0]
    n = max(len(x) for x, _ in rows)
    u_nodes = np.array([np.pad(x, (0, n - len(x)), mode="edge") for x, _ in rows])
    u_w = np.array([np.pad(wt, (0, n - len(wt))) for _, wt in rows])
    ends = np.maximum(u_max, 2 * u0)[:, None]
    w = _newton_on_level(w_start, np.concatenate([u_nodes, ends], 1), h_ref, s, g, res.newton_substeps,
                         res.newton_iters)
    w_far, w_end = w[:, :-1], w[:, -1]
    return w_far, u_w * (-2 * u_nodes / _dh(w_far, s[:, None], g)), w_end


def _bulk(s, g, res: Resolution = FINE):
    """Paths through the complex saddle in the upper half tau-plane (inside the Marchenko-Pastur bulk)."""
    b_ = 1 - g - s
    w0 = np.log((-b_ + 1j * np.sqrt(4 * s * g - b_**2)) / (2 * s))
    h0 = _h(w0, s, g)
    phi = (np.pi - np.angle(_d2h(w0, s, g))) / 2
    wa, ca, ea = _near(w0, phi, s, g, res)
    wb, cb, eb = _near(w0, phi + np.pi, s, g, res)
    # The branch that heads to Re w = -inf is traversed towards the saddle: its weights change sign.
    a_left = np.real(ea) < np.real(eb)
    w_l, c_l = np.where(a_left[:, None], wa, wb), -np.where(a_left[:, None], ca, cb)
    w_r, c_r = np.where(a_left[:, None], wb, wa), np.where(a_left[:, None], cb, ca)
    wl_far, cl_far, w_tail = _far(np.where(a_left, ea, eb), h0, s, g, _R_LEFT, res)
    wr_far, cr_far, _ = _far(np.where(a_left, eb, ea), h0, s, g, _R_RIGHT, res)
    w = np.concatenate([w_l, wl_far, w_r, wr_far], 1)
    c = np.concatenate([c_l, -cl_far, c_r, cr_far], 1)
    return h0, w, c, w_tail - h0


def _segment(length):
    """Nodes on [0, length] graded towards both ends: P is the peak, and Q may sit close to the singular tau = 1."""
    rows = []
    for ln in np.maximum(length, 1e-300):
        first = min(0.004, ln / 2)
        x0, w0 = _panels(0.0, ln / 2, first)
        rows.append((np.concatenate([x0, ln - x0[::-1]]), np.concatenate([w0, w0[::-1]])))
    n = max(len(x) for x, _ in rows)
    x = np.array([np.pad(x, (0, n - len(x)), mode="edge") for x, _ in rows])
    wts = np.array([np.pad(wt, (0, n - len(wt))) for _, wt in rows])
    return x, wts.astype(complex)


def _outside(s, g, res: Resolution = FINE):
    """Paths outside the bulk: both saddles P (a peak along the boundary line) and Q (a pass) are real.

    Above the bulk the line is Im w = 0 (0 < tau < 1), below it Im w = pi (tau < 0). The contour runs along the line
    from Re w = -inf through P to Q, then leaves the line at Q into the strip and goes to Re w = +inf.
    """
    b_ = 1 - g - s
    root = np.sqrt(np.maximum(b_**2 - 4 * s * g, 0.0))
    # Stable quadratic roots: s -> 0 would otherwise give 0/0 for the small root.
    q = -(b_ + np.copysign(root, b_)) / 2
    t1, t2 = q / s, g / q
    above = t1 > 0
    t_p = np.where(above, np.minimum(t1, t2), np.maximum(t1, t2))
    t_q = np.where(above, np.maximum(t1, t2), np.minimum(t1, t2))
    line = np.where(above, 0.0, np.pi)
    w_p = np.log(np.abs(t_p)) + 1j * line
    w_q = np.log(np.abs(t_q)) + 1j * line
    h_p = _h(w_p, s, g)
    w_l, c_l, e_l = _near(w_p, np.pi, s, g, res)
    wl_far, cl_far, w_tail = _far(e_l, h_p, s, g, _R_LEFT, res)
    w_seg, c_seg = _segment(np.real(w_q - w_p))
    w_seg = w_p[:, None] + w_seg
    phi_q = np.where(above, np.pi / 2, -np.pi / 2)
    h_q = _h(w_q, s, g)
    w_qn, c_qn, e_q = _near(w_q, phi_q, s, g, res)
    wq_far, cq_far, _ = _far(e_q, h_q, s, g, _R_RIGHT, res)
    w = np.concatenate([w_l, wl_far, w_seg, w_qn, wq_far], 1)
    c = np.concatenate([-c_l, -cl_far, c_seg, c_qn, cq_far], 1)
    return h_p, w, c, w_tail - h_p


def contours(s: np.ndarray, gamma: float, resolution: Resolution = FINE) -> Contours:
    """Steepest-descent quadrature of I(s) at every point of `s` (1-D, positive) for one gamma in (0, 1]."""
    s = np.atleast_1d(np.asarray(s, float))
    g = float(gamma)
    inside = (1 - g - s) ** 2 < 4 * s * g
    parts = []
    for mask, build in ((inside, _bulk), (~inside, _outside)):
        if mask.any():
            parts.append((mask, build(s[mask], g, resolution)))
    q = max(p[1][1].shape[1] for p in parts)
    h_star = np.empty(s.size, complex)
    tail = np.empty(s.size, complex)
    w = np.zeros((s.size, q), complex)
    c = np.zeros((s.size, q), complex)
    for mask, (h0, wk, ck, tk) in parts:
        h_star[mask], tail[mask] = h0, tk
        w[mask, : wk.shape[1]] = wk
        c[mask, : ck.shape[1]] = ck
    dh = _h(w, s[:, None], g) - h_star[:, None]
    dh = np.where(c == 0, -np.inf, dh)
    return Contours(s=s, gamma=g, h_star=h_star, dh=dh, c=c, tail=tail)
