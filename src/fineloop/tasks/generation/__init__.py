"""The generation task family: causal LMs fine-tuned with LoRA (SFT, DPO, KTO)."""
