"""A/B rollouts: split a project's traffic between versions, score each variant on the
feedback its interactions received, and let a policy roll back or promote on significance.

spec.py      what a rollout is made of (variants, policy) as validated input
store.py     rollout rows and their history
public.py    the shape the API, CLI and dashboard show
routing.py   sticky assignment of a request to a variant and version
live.py      the per-process cache of active rollouts, and when the policy runs
metrics.py   per-variant online metrics read from interactions and feedback
stats.py     significance tests between the control and a challenger
policy.py    automatic rollback and promotion, recorded with their reason

Nothing here imports torch, and scipy only when a test statistic is computed.
"""
