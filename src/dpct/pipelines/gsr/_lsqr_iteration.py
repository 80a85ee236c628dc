"""The LSQR iteration (Paige & Saunders 1982) over a fused row operator, and nothing else.

The recurrences, stopping rules and returned quantities follow ``scipy.sparse.linalg.lsqr``
line by line, so the two can be compared. What differs is how A is applied: LSQR's
``u <- A v - alpha u`` and ``A^T u`` come out of a single fused pass over the rows
(``RowOperator.apply``), because ``A^T u`` can be accumulated before u is normalised:
u is kept unnormalised, inside the operator, together with its pending scale
``1/beta``. The iteration runs on the right-preconditioned matrix ``A M``
(``_precondition.py``).

Everything the iteration carries from one step to the next is in an :class:`LsqrState`
(plus the operator's u), so a driver can save it, and resume from it bit for bit; where
the rows live (CPU, GPU, MPI ranks), how progress is shown and when state is saved are
the drivers' business (``_lsqr.py`` composes them).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numba as nb
import numpy as np
from numpy.typing import NDArray

from dpct.pipelines.gsr._precondition import Preconditioner
from dpct.pipelines.gsr._progress import IterationInfo

ISTOP_INTERRUPTED = 8
REASONS = (
    "the exact solution is x = x0",
    "Ax - b is small enough, given atol, btol",
    "the least-squares solution is good enough, given atol",
    "the estimate of cond(A M) has exceeded conlim",
    "Ax - b is small enough for this machine",
    "the least-squares solution is good enough for this machine",
    "cond(A M) seems to be too large for this machine",
    "the iteration limit has been reached",
    "interrupted by the caller; solve again with the same checkpoint to resume",
)
_EPS = float(np.finfo(np.float64).eps)

SCALARS = (
    "itn", "istop", "u_scale", "alfa", "beta", "rhobar", "phibar", "anorm", "acond",
    "ddnorm", "res2", "xnorm", "xxnorm", "z", "cs2", "sn2", "bnorm", "rnorm", "r1norm",
    "r2norm", "arnorm", "finished",
)  # fmt: skip
"""Names of the scalar state, in the order a checkpoint stores them."""


class RowPass(Protocol):
    """What the iteration needs of A: the fused pass, and access to the pending u.

    ``apply(vs, c_rhs, c_av, c_u)`` sets ``u <- c_rhs b + c_av A vs + c_u u`` (rows
    weighted) and returns ``(A^T u, |u|^2)``; ``n`` is the number of unknowns.
    """

    n: int

    def apply(
        self, vs: NDArray[np.float64], c_rhs: float, c_av: float, c_u: float
    ) -> tuple[NDArray[np.float64], float]: ...

    def get_u(self) -> tuple[NDArray[np.float64], NDArray[np.float64]]: ...

    def set_u(self, u_obs: NDArray[np.float64], u_con: NDArray[np.float64]) -> None: ...


@dataclass(eq=False)
class LsqrState:
    """LSQR's state between iterations; with the operator's u, all that a resume needs.

    Attributes
    ----------
    y
        Current solution of the preconditioned problem (``x = M y``).
    v, w
        LSQR's right Lanczos vector and search direction.
    var
        Running variance estimate (preconditioned-diagonal form), or None.
    scalars
        The recurrences' scalars, keyed by the names in :data:`SCALARS`.
    """

    y: NDArray[np.float64]
    v: NDArray[np.float64]
    w: NDArray[np.float64]
    var: NDArray[np.float64] | None
    scalars: dict[str, float]

    @property
    def itn(self) -> int:
        """Iterations done."""
        return int(self.scalars["itn"])

    @property
    def istop(self) -> int:
        """Why the iteration stopped (SciPy's codes, or :data:`ISTOP_INTERRUPTED`)."""
        return int(self.scalars["istop"])

    @property
    def finished(self) -> bool:
        """True once a stopping rule other than the iteration limit has fired."""
        return bool(self.scalars["finished"])


OnIteration = Callable[[IterationInfo, LsqrState], bool]
"""Called after every iteration with the new state; returning True interrupts the solve."""


@nb.njit(cache=True)
def sumsq(v: NDArray[np.float64]) -> float:
    """Sum of squares in a fixed order (BLAS may thread and reorder; checkpoints must not)."""
    s0 = s1 = s2 = s3 = 0.0
    n = v.shape[0]
    k = n - n % 4
    for i in range(0, k, 4):
        s0 += v[i] * v[i]
        s1 += v[i + 1] * v[i + 1]
        s2 += v[i + 2] * v[i + 2]
        s3 += v[i + 3] * v[i + 3]
    for i in range(k, n):
        s0 += v[i] * v[i]
    return (s0 + s1) + (s2 + s3)


def norm(v: NDArray[np.float64]) -> float:
    """Euclidean norm with :func:`sumsq`'s fixed order."""
    return math.sqrt(sumsq(v))


def _sym_ortho(a: float, b: float) -> tuple[float, float, float]:
    """Stable Givens rotation, as in SciPy's LSQR."""
    if b == 0:
        return math.copysign(1.0, a), 0.0, abs(a)
    if a == 0:
        return 0.0, math.copysign(1.0, b), abs(b)
    if abs(b) > abs(a):
        tau = a / b
        s = math.copysign(1.0, b) / math.sqrt(1 + tau * tau)
        c = s * tau
        r = b / s
    else:
        tau = b / a
        c = math.copysign(1.0, a) / math.sqrt(1 + tau * tau)
        s = c * tau
        r = a / c
    return c, s, r


def start(
    op: RowPass,
    pre: Preconditioner,
    *,
    bnorm: float,
    x0: NDArray[np.float64] | None,
    calc_var: bool,
) -> LsqrState:
    """The state before the first iteration: LSQR's bidiagonalisation started at ``x0``.

    ``bnorm`` is ``|b|`` of the weighted right-hand side, constraint rows included; the
    caller computes it because only it knows whether the rows are spread over ranks.
    """
    n = op.n
    st = dict.fromkeys(SCALARS, 0.0)
    st.update(cs2=-1.0, u_scale=1.0, bnorm=bnorm)
    var = np.zeros(n) if calc_var else None
    if x0 is None:
        y = np.zeros(n)
        out, ss = op.apply(y, 1.0, 0.0, 0.0)
    else:
        y = pre.solve(x0)
        out, ss = op.apply(x0, 1.0, -1.0, 0.0)
    beta = math.sqrt(ss)
    alfa = 0.0
    if beta > 0:
        st["u_scale"] = 1.0 / beta
        v = pre.apply_t(out) * st["u_scale"]
        alfa = norm(v)
    else:
        v = y.copy()
    if alfa > 0:
        v *= 1.0 / alfa
    w = v.copy()
    st.update(alfa=alfa, beta=beta, rhobar=alfa, phibar=beta, rnorm=beta)
    st.update(r1norm=beta, r2norm=beta, arnorm=alfa * beta)
    if alfa * beta == 0:
        st["finished"] = 1.0
    return LsqrState(y=y, v=v, w=w, var=var, scalars=st)


def iterate(
    op: RowPass,
    pre: Preconditioner,
    state: LsqrState,
    *,
    damp: float,
    atol: float,
    btol: float,
    conlim: float,
    iter_lim: int,
    on_iteration: OnIteration | None = None,
) -> LsqrState:
    """Run LSQR from ``state`` until a stopping rule, ``iter_lim`` or ``on_iteration`` says stop.

    ``state`` is updated in place (and returned): after every iteration it holds the new
    state before ``on_iteration`` sees it, so a driver may save it there.
    """
    st = state.scalars
    y, v, w, var = state.y, state.v, state.w, state.var
    dampsq = damp * damp
    ctol = 1.0 / conlim if conlim > 0 else 0.0
    bnorm = st["bnorm"]
    t_start = time.perf_counter()
    while not st["finished"] and st["itn"] < iter_lim:
        itn = int(st["itn"]) + 1
        alfa = st["alfa"]
        out, ss = op.apply(pre.apply(v), 0.0, 1.0, -alfa * st["u_scale"])
        beta = math.sqrt(ss)
        anorm = st["anorm"]
        if beta > 0:
            st["u_scale"] = 1.0 / beta
            anorm = math.sqrt(anorm * anorm + alfa * alfa + beta * beta + dampsq)
            v = pre.apply_t(out) * st["u_scale"] - beta * v
            alfa = norm(v)
            if alfa > 0:
                v *= 1.0 / alfa
        else:
            st["u_scale"] = 1.0

        rhobar, phibar = st["rhobar"], st["phibar"]
        if damp > 0:
            rhobar1 = math.sqrt(rhobar * rhobar + dampsq)
            cs1 = rhobar / rhobar1
            sn1 = damp / rhobar1
            psi = sn1 * phibar
            phibar = cs1 * phibar
        else:
            rhobar1 = rhobar
            psi = 0.0
        cs, sn, rho = _sym_ortho(rhobar1, beta)
        theta = sn * alfa
        rhobar = -cs * alfa
        phi = cs * phibar
        phibar = sn * phibar
        tau = sn * phi

        t1 = phi / rho
        t2 = -theta / rho
        dk = (1.0 / rho) * w
        y += t1 * w
        w = v + t2 * w
        ddnorm = st["ddnorm"] + sumsq(dk)
        if var is not None:
            var += pre.diag_of_product(dk)

        delta = st["sn2"] * rho
        gambar = -st["cs2"] * rho
        rhs = phi - delta * st["z"]
        zbar = rhs / gambar
        xnorm = math.sqrt(st["xxnorm"] + zbar * zbar)
        gamma = math.sqrt(gambar * gambar + theta * theta)
        cs2 = gambar / gamma
        sn2 = theta / gamma
        z = rhs / gamma
        xxnorm = st["xxnorm"] + z * z

        acond = anorm * math.sqrt(ddnorm)
        res1 = phibar * phibar
        res2 = st["res2"] + psi * psi
        rnorm = math.sqrt(res1 + res2)
        arnorm = alfa * abs(tau)
        if damp > 0:
            r1sq = rnorm * rnorm - dampsq * xxnorm
            r1norm = math.copysign(math.sqrt(abs(r1sq)), r1sq)
        else:
            r1norm = rnorm
        r2norm = rnorm

        test1 = rnorm / bnorm
        test2 = arnorm / (anorm * rnorm + _EPS)
        test3 = 1.0 / (acond + _EPS)
        t1 = test1 / (1 + anorm * xnorm / bnorm)
        rtol = btol + atol * anorm * xnorm / bnorm
        istop = 0
        if itn >= iter_lim:
            istop = 7
        if 1 + test3 <= 1:
            istop = 6
        if 1 + test2 <= 1:
            istop = 5
        if 1 + t1 <= 1:
            istop = 4
        if test3 <= ctol:
            istop = 3
        if test2 <= atol:
            istop = 2
        if test1 <= rtol:
            istop = 1

        st.update(
            itn=itn, istop=istop, alfa=alfa, beta=beta, rhobar=rhobar, phibar=phibar,
            anorm=anorm, acond=acond, ddnorm=ddnorm, res2=res2, xnorm=xnorm,
            xxnorm=xxnorm, z=z, cs2=cs2, sn2=sn2, rnorm=rnorm, r1norm=r1norm,
            r2norm=r2norm, arnorm=arnorm, finished=float(0 < istop < 7),
        )  # fmt: skip
        state.y, state.v, state.w = y, v, w
        if on_iteration is None:
            continue
        info = IterationInfo(
            itn=itn,
            iter_lim=iter_lim,
            r1norm=r1norm,
            arnorm=arnorm,
            test1=test1,
            test2=test2,
            anorm=anorm,
            acond=acond,
            seconds=time.perf_counter() - t_start,
        )
        if on_iteration(info, state) and not st["finished"]:
            st["istop"] = ISTOP_INTERRUPTED
            break
    if not st["finished"] and st["istop"] != ISTOP_INTERRUPTED and st["itn"] >= iter_lim:
        st["istop"] = 7
    return state
