"""Helpers the bench scripts share (not a bench itself)."""


def pct(v, p):
    """The p-quantile of v (0 <= p <= 1), nearest rank from below; 0.0 if empty."""
    v = sorted(v)
    return v[min(len(v) - 1, int(len(v) * p))] if v else 0.0
