"""A Gaussian mixture's negative log-likelihood with a Wishart prior (ADBench's GMM objective).

The published objective (Srajer, Kukelova, Fitzgibbon, "A benchmark of selected algorithmic
differentiation tools on some problems in computer vision and machine learning", 2018), for n
points x_i in R^d and K components with weights alpha_k, means mu_k and inverse covariance
factors Q_k (lower triangular, exp of the first d parameters of ``icf_k`` on the diagonal, the
rest below it, row by row):

    f = -n d/2 log(2 pi) + sum_i logsumexp_k(alpha_k + sum(q_k) - 1/2 |Q_k (x_i - mu_k)|^2)
        - n logsumexp_k(alpha_k)
        + sum_k (gamma^2/2 (|exp(q_k)|^2 + |l_k|^2) - m sum(q_k)) - K C(d, gamma, m)

with q_k the diagonal parameters, l_k the off-diagonal ones, and C the Wishart normaliser
d n' (log gamma - log(2)/2) - log Gamma_d(n'/2), n' = d + m + 1.

Written as a new user would: MatrixSymbols for the data and the parameters, the K components
unrolled in Python, each Q_k an explicit ``sp.Matrix`` of the parameters.  ``gmm_d2_k5`` is the
small problem (d = 2, K = 5; n is read from ``x``), ``gmm_d10_k25`` a large one.

    symgrad compile examples/gmm.py --model gmm_d2_k5 --check
"""
import sympy as sp
from sympy import HadamardPower, MatrixSymbol, OneMatrix, Trace, exp, log

import symgrad

GAMMA, M = 1, 0                       # ADBench's Wishart parameters
n = sp.Symbol("n", integer=True, positive=True)


def gmm(d, K, name):
    x = MatrixSymbol("x", n, d)
    alphas = MatrixSymbol("alphas", 1, K)
    means = MatrixSymbol("means", K, d)
    icf = MatrixSymbol("icf", K, d * (d + 1) // 2)
    ones_n = OneMatrix(n, 1)
    terms, prior = [], 0
    for k in range(K):
        q = [icf[k, j] for j in range(d)]
        low = [icf[k, j] for j in range(d, d * (d + 1) // 2)]
        rows, it = [], iter(low)
        for r in range(d):                                  # Q_k, lower triangular
            rows.append([next(it) if c < r else (exp(q[r]) if c == r else 0) for c in range(d)])
        Q = sp.Matrix(rows)
        centred = x - ones_n * means[k, :]                  # (n x d)
        sq = HadamardPower(centred * Q.T, 2) * OneMatrix(d, 1)  # |Q_k (x_i - mu_k)|^2, (n x 1)
        main = ones_n * (alphas[0, k] + sum(q)) - sq / 2
        terms.append(main.applyfunc(exp))
        prior += sp.Rational(GAMMA**2, 2) * (sum(exp(2 * t) for t in q) + sum(t**2 for t in low)) \
            - M * sum(q)
    lse = sp.MatAdd(*terms).applyfunc(log)                  # (n x 1): logsumexp_k per point
    lse_alpha = log(sum(exp(alphas[0, k]) for k in range(K)))
    nprime = d + M + 1
    C = d * nprime * (log(GAMMA) - log(2) / 2) - sp.log(sp.multigamma(sp.Rational(nprime, 2), d))
    f = (-n * d * log(2 * sp.pi) / 2 + Trace(OneMatrix(1, n) * lse) - n * lse_alpha
         + prior - K * C)
    return symgrad.Model(f, wrt=[alphas, means, icf], name=name)


gmm_d2_k5 = gmm(2, 5, "gmm_d2_k5")
gmm_d10_k25 = gmm(10, 25, "gmm_d10_k25")
