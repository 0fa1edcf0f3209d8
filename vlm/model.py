"""Load a vision-language model and its processor, with LoRA / QLoRA when asked.

``load_model_and_processor("Qwen/Qwen2-VL-2B-Instruct", lora=LoraArgs())`` and
``load_model_and_processor("models/tiny-qwen2vl", ...)`` take the same path:
``AutoProcessor`` + ``AutoModelForImageTextToText``. LoRA targets default to a regular
expression anchored on the *language model's* attention and MLP projections: LLaVA's CLIP
tower also has ``q_proj``/``k_proj``/``v_proj``, so a plain name list would silently adapt
the vision tower too. ``LoraArgs.vision = True`` adds the vision tower's own projections.
"""

from __future__ import annotations

import logging
import os
import re
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from engine.errors import ModelError

__all__ = [
    "QUANTIZATIONS",
    "LoraArgs",
    "cache_dir",
    "resolve_model_id",
    "detect_family",
    "lora_target_regex",
    "vision_skip_modules",
    "resolve_dtype",
    "load_model_and_processor",
]

logger = logging.getLogger(__name__)

QUANTIZATIONS: tuple[str | None, ...] = (None, "4bit", "8bit")

_LM_TARGETS = (
    r".*language_model\.(model\.)?layers\.\d+\."
    r"(self_attn\.(q_proj|k_proj|v_proj|o_proj)|mlp\.(gate_proj|up_proj|down_proj))"
)
_VISION_TARGETS = {
    "qwen2vl": r".*visual\.(blocks\.\d+\.(attn\.(qkv|proj)|mlp\.(fc1|fc2))|merger\.mlp\.(0|2))",
    "llava": (
        r".*vision_tower\..*layers\.\d+\.(self_attn\.(q_proj|k_proj|v_proj|out_proj)|mlp\.fc[12])"
        r"|.*multi_modal_projector\.linear_[12]"
    ),
}
# Short names for transformers 4.x (substring match) and full prefixes for 5.x (which
# matches from the start of the module name or as a suffix: "visual" alone skips nothing).
_VISION_MODULES = {
    "qwen2vl": ["lm_head", "visual", "model.visual"],
    "llava": [
        "lm_head",
        "vision_tower",
        "multi_modal_projector",
        "model.vision_tower",
        "model.multi_modal_projector",
    ],
}


@dataclass
class LoraArgs:
    """LoRA settings.

    Attributes
    ----------
    lora_r, lora_alpha, lora_dropout
        Rank, scaling numerator and dropout of the adapters.
    lora_targets : str
        ``"default"`` (language-model attention + MLP projections, see
        :func:`lora_target_regex`), a regular expression matched against full module
        names, or a comma-separated list of module-name suffixes.
    lora_vision : bool
        Also adapt the vision tower (and projector/merger) with the default targets.
    modules_to_save : list of str
        Modules trained fully and saved with the adapter (e.g. ``lm_head``,
        ``embed_tokens`` for a randomly initialised tiny model, which learns too slowly
        otherwise).
    """

    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_targets: str = "default"
    lora_vision: bool = False
    modules_to_save: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.lora_r <= 0 or self.lora_alpha <= 0:
            raise ModelError("lora_r and lora_alpha must be positive")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise ModelError(f"lora_dropout {self.lora_dropout}: expected 0 <= p < 1")


#: A Hugging Face Hub repository id: ``name`` or ``owner/name``.
_HUB_ID = re.compile(r"^(?:[A-Za-z0-9][\w.-]*/)?[A-Za-z0-9][\w.-]*$")
_HUB_TIMEOUT_S = 3.0


def cache_dir() -> Path:
    """psgvlm's cache folder: ``$PSGVLM_CACHE_DIR``, else ``~/.cache/psgvlm``."""
    return Path(os.environ.get("PSGVLM_CACHE_DIR") or "~/.cache/psgvlm").expanduser()


def _hub_reachable() -> bool:
    endpoint = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        socket.create_connection((endpoint.hostname, port), timeout=_HUB_TIMEOUT_S).close()
    except OSError:
        return False
    return True


def resolve_model_id(
    name: str | os.PathLike,
    image_size: tuple[int, int] | None = None,
    tiny_cache_dir: str | os.PathLike | None = None,
) -> str:
    """What ``from_pretrained`` should load for a ``--model`` value.

    The one place that reads model ids, for every command:

    - ``tiny:FAMILY`` (``tiny:qwen2vl``, ``tiny:llava``): a randomly initialised tiny model
      of the real architecture at ``image_size``, built once under
      ``tiny_cache_dir`` (default ``cache_dir() / "tiny"``);
    - an existing local directory: itself;
    - a Hub id (``Qwen/Qwen2-VL-2B-Instruct``): itself when cached or when the Hub is
      reachable (checked within a few seconds).

    Parameters
    ----------
    name : str or path
    image_size : (int, int), optional
        ``(width, height)`` of the images; required for ``tiny:`` ids.
    tiny_cache_dir : path, optional

    Raises
    ------
    ModelError
        For a local path that does not exist, a ``tiny:`` id of an unknown family or
        without an image size, and a Hub id that is neither cached nor reachable.

    Examples
    --------
    >>> resolve_model_id("runs/nowhere/model")
    Traceback (most recent call last):
    ...
    engine.errors.ModelError: no such model directory: runs/nowhere/model
    """
    from .tiny import FAMILIES, TINY_PREFIX, resolve_tiny_model

    text = str(name)
    if text.startswith(TINY_PREFIX):
        family = text[len(TINY_PREFIX) :]
        if family not in FAMILIES:
            raise ModelError(
                f"--model {text}: unknown tiny family {family!r}; expected "
                + " or ".join(TINY_PREFIX + f for f in FAMILIES)
            )
        if image_size is None:
            raise ModelError(f"--model {text}: the image size is needed to build a tiny model")
        folder = Path(tiny_cache_dir).expanduser() if tiny_cache_dir else cache_dir() / "tiny"
        return resolve_tiny_model(text, folder, image_size)
    path = Path(text).expanduser()
    if path.is_dir():
        return str(path)
    if path.exists() or not _HUB_ID.match(text):
        raise ModelError(f"no such model directory: {text}")
    from huggingface_hub import try_to_load_from_cache

    if isinstance(try_to_load_from_cache(text, "config.json"), str):
        return text
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        raise ModelError(f"--model {text}: not in the Hugging Face cache and HF_HUB_OFFLINE is set")
    if not _hub_reachable():
        raise ModelError(
            f"--model {text}: no such local directory, not in the Hugging Face cache, and the "
            "Hub cannot be reached (no network?); download it elsewhere and pass its directory"
        )
    return text


def detect_family(config: Any) -> str:
    """``"qwen2vl"`` or ``"llava"`` from a transformers config (``model_type``)."""
    model_type = getattr(config, "model_type", "")
    if model_type in ("qwen2_vl", "qwen2_5_vl"):
        return "qwen2vl"
    if model_type == "llava":
        return "llava"
    raise ModelError(f"unsupported model type {model_type!r}; expected qwen2_vl or llava")


def lora_target_regex(family: str, vision: bool = False) -> str:
    """Default LoRA target regex: language-model projections (+ vision tower if asked)."""
    if family not in _VISION_TARGETS:
        raise ModelError(f"unknown model family {family!r}")
    return f"{_LM_TARGETS}|{_VISION_TARGETS[family]}" if vision else _LM_TARGETS


def vision_skip_modules(family: str) -> list[str]:
    """Modules bitsandbytes must leave unquantised (``lm_head`` and the vision side)."""
    if family not in _VISION_MODULES:
        raise ModelError(f"unknown model family {family!r}")
    return list(_VISION_MODULES[family])


def resolve_dtype(dtype: str, device: str):
    """``"auto"`` → bfloat16 on CUDA, float32 elsewhere; else the named torch dtype."""
    import torch

    if dtype == "auto":
        return torch.bfloat16 if str(device).startswith("cuda") else torch.float32
    resolved = getattr(torch, dtype, None)
    if not isinstance(resolved, torch.dtype):
        raise ModelError(f"unknown dtype {dtype!r}; expected auto, float32, bfloat16, float16")
    return resolved


def _lora_config(args: LoraArgs, family: str):
    from peft import LoraConfig

    if args.lora_targets == "default":
        targets: str | list[str] = lora_target_regex(family, args.lora_vision)
    elif "," in args.lora_targets or args.lora_targets.isidentifier():
        targets = [t.strip() for t in args.lora_targets.split(",") if t.strip()]
    else:
        targets = args.lora_targets
    return LoraConfig(
        r=args.lora_r,
        lora_alpha=args.lora_alpha,
        lora_dropout=args.lora_dropout,
        target_modules=targets,
        modules_to_save=list(args.modules_to_save) or None,
        bias="none",
        task_type="CAUSAL_LM",
    )


def load_model_and_processor(
    name_or_path: str | Path,
    *,
    image_size: tuple[int, int] | None = None,
    family: str | None = None,
    quantization: str | None = None,
    dtype: str = "auto",
    lora: LoraArgs | None = None,
    adapter: str | Path | None = None,
    device: str = "cpu",
    gradient_checkpointing: bool = False,
    trainable: bool | None = None,
):
    """Load processor + model, optionally quantised, with a new or saved LoRA adapter.

    Parameters
    ----------
    name_or_path : str or Path
        Hub id (``Qwen/Qwen2-VL-2B-Instruct``), local directory or ``tiny:FAMILY``
        (resolved by :func:`resolve_model_id`).
    image_size : (int, int), optional
        ``(width, height)`` of the images, needed to build a ``tiny:`` model.
    family : {"qwen2vl", "llava"}, optional
        Checked against the config; detected when omitted.
    quantization : {None, "4bit", "8bit"}
        bitsandbytes NF4 (QLoRA, double quantisation) or LLM.int8 weights; the vision
        tower and ``lm_head`` stay unquantised.
    dtype : str
        ``"auto"`` (bf16 on GPU, fp32 on CPU) or a torch dtype name.
    lora : LoraArgs, optional
        Add a new trainable LoRA adapter.
    adapter : str or Path, optional
        Load a saved adapter (``PeftModel.from_pretrained``); exclusive with ``lora``.
    device : str
        ``"cpu"``, ``"cuda"``, ``"cuda:1"``...
    gradient_checkpointing : bool
        Trade compute for memory while training.
    trainable : bool, optional
        Whether a loaded ``adapter`` stays trainable (default: no, i.e. inference).

    Returns
    -------
    (model, processor, family)
    """
    from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor

    if quantization not in QUANTIZATIONS:
        raise ModelError(f"quantization {quantization!r}: expected one of {QUANTIZATIONS}")
    if lora is not None and adapter is not None:
        raise ModelError("give either lora (new adapter) or adapter (saved one), not both")
    if adapter is not None and not (Path(adapter) / "adapter_config.json").is_file():
        raise ModelError(f"{adapter}: not a LoRA adapter directory (no adapter_config.json)")
    name = resolve_model_id(name_or_path, image_size)
    try:
        config = AutoConfig.from_pretrained(name)
        processor = AutoProcessor.from_pretrained(name)
    except (OSError, ValueError) as err:
        raise ModelError(f"cannot load model/processor {name!r}: {err}") from None
    detected = detect_family(config)
    if family is not None and family != detected:
        raise ModelError(f"{name}: family {family!r} requested but the config is {detected!r}")
    processor.tokenizer.padding_side = "left"
    torch_dtype = resolve_dtype(dtype, device)
    kwargs: dict[str, Any] = {"dtype": torch_dtype}
    if quantization is not None:
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=quantization == "4bit",
            load_in_8bit=quantization == "8bit",
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch_dtype,
            llm_int8_skip_modules=vision_skip_modules(detected),
        )
        kwargs["device_map"] = {"": device}
    try:
        model = AutoModelForImageTextToText.from_pretrained(name, **kwargs)
    except (OSError, ValueError) as err:
        raise ModelError(f"cannot load model {name!r}: {err}") from None
    if quantization is None:
        model.to(device)
    if quantization is not None and (lora is not None or trainable):
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=gradient_checkpointing
        )
    elif gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    if lora is not None:
        from peft import get_peft_model

        model = get_peft_model(model, _lora_config(lora, detected))
    elif adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter), is_trainable=bool(trainable))
    if lora is None and not trainable:
        model.eval()
    return model, processor, detected
