"""Fine-tuning the cross-encoder reranker (``fine_tune_reranker.py``).

arguments  the script's flags and their checks
modeling   the reranker: a one-logit CrossEncoder
examples   labelled (query, passage) pairs with mined and random negatives, and the dev candidates
sampler    length-grouped batches, fixed per optimizer step
trainer    the CrossEncoderTrainer using that sampler
evaluator  dev metrics of the reranked first stage, reranker fusion, the dev report
"""
