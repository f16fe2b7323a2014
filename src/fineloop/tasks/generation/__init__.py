"""The generation task family: causal LMs fine-tuned with LoRA (SFT, DPO, KTO) from
corrections, preferences, thumbs and ratings, served OpenAI-style (task.py is what the loop
sees)."""

from fineloop.tasks.generation.task import GenerationTask

__all__ = ["GenerationTask"]
