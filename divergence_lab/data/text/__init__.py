"""Text data for distilling causal language models: tokenizers, synthetic tasks, file readers, batches.

* :mod:`~divergence_lab.data.text.tokenizer`: a local character tokenizer, or a user's saved one;
* :mod:`~divergence_lab.data.text.synthetic_tasks`: seeded prompts with exactly checkable answer sets;
* :mod:`~divergence_lab.data.text.jsonl` / :mod:`~divergence_lab.data.text.saved`: examples read from
  JSON-lines files or from a dataset saved with ``datasets.save_to_disk``;
* :mod:`~divergence_lab.data.text.lm_datamodule`: the data modules of ``conf/data/lm_*.yaml``, which
  satisfy :class:`~divergence_lab.data.text.protocol.LanguageModelData`.
"""
