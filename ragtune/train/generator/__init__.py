"""Answer-generator fine-tuning (LoRA / QLoRA on a chat causal LM) and its inference helpers.

prompt      the one RAG prompt, shared by training and evaluate_rag.py
data        training examples from query files + corpus, chat JSONL or instruction JSONL
tokenize    chat-template tokenisation with answer-only labels and context-only truncation
lora        peft / bitsandbytes set-up
evaluation  generated-answer dev metrics and the Trainer that reports them
inference   loading base (+ adapter, + GGUF) and greedy generation
merge       merging the adapter into a 16-bit base, checked against the adapter
memory      GPU memory estimate for LoRA / QLoRA
"""
