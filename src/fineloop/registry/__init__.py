"""Model registry: immutable versions, aliases with history, the promotion gate."""
