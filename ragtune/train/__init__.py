"""Fine-tuning: the run every script shares, and one subpackage per model kind.

runner         TrainingRun: output-dir checks, data and audit, the TrainingPlan, summary, train, finish
arguments      flags shared by the three scripts and their checks
training_args  precision and the Trainer arguments built from the flags
checkpoints    finished runs, complete checkpoints, the resume point
callbacks      interruption checkpoints, save-best, early stopping, sampler epochs
distributed    the main process, and work computed once on it and shared
outputs        dev-metric history, training curves, the before/after table
evaluator      the dev evaluator contract of the embedding and reranker scripts
memory         GPU memory estimate for the encoders

embedder/, reranker/, generator/: arguments, data/examples, sampler, modeling, trainer, evaluator of each kind.
Imports core, audit, retrieval and generation; never evaluate.
"""
