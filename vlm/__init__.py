"""psgvlm vision-language side: shards → chats → LoRA/QLoRA fine-tuning → answers.

Modules (imported on demand; this package itself imports nothing heavy, no torch):
``tiny`` (offline random Qwen2-VL / LLaVA), ``data`` (shards → chats, collator),
``model`` (load + LoRA/QLoRA), ``train`` (``accelerate launch vlm/train.py --config ...``),
``evaluate`` (candidate scoring, metrics, reports).
"""

__all__: list[str] = []
