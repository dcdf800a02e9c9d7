"""Fine-tuning the answer generator with LoRA / QLoRA (``fine_tune_generator.py``).

arguments  the script's flags and their checks
data       training examples from query files + corpus, chat JSONL or instruction JSONL
tokenize   chat-template tokenisation with answer-only labels and context-only truncation
lora       peft / bitsandbytes set-up
trainer    the Trainer that adds generated-answer metrics to each evaluation
evaluator  generated-answer dev metrics
merge      merging the adapter into a 16-bit base, checked against the adapter
memory     GPU memory estimate for LoRA / QLoRA
outputs    the adapter's model card, the summary and the results table

The prompt, chat rendering and generation itself are in ``ragtune.generation`` (evaluation uses them too).
"""
