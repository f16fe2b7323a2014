"""The NER task family: token classification fine-tuned from span labels and corrections,
evaluated entity by entity with seqeval, served as character spans (task.py is what the
loop sees)."""

from fineloop.tasks.ner.task import NerTask

__all__ = ["NerTask"]
