"""Fine-tuning the embedding model (``fine_tune_bge_m3.py``).

arguments  the script's flags and their checks
modeling   the model loaded, prompts set, bottom layers frozen
examples   (query, positive, hard negatives) rows from the labelled queries
sampler    batches with no passage relevant to another query of the batch
trainer    the SentenceTransformerTrainer using that sampler
evaluator  dev retrieval metrics, and the hybrid weight chosen on dev
"""
