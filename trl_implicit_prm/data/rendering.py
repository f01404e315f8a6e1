"""How training rendered prompts and ended completions, recorded with a checkpoint and applied by every reader.

A trainer measures how its training prompts look and writes it to `implicit_prm.json` with `append_eos`:

```json
{"prompt_format": {"kind": "text", "separator": "\\n"}, "append_eos": true}
{"prompt_format": {"kind": "chat", "system": null, "chat_template_sha256": "3f1c..."}, "append_eos": true}
```

- `kind: "text"`: the prompts were plain strings; `separator` is the whitespace every one of them ended with
  (their longest common trailing whitespace, "" when none), i.e. what separated prompt and completion.
- `kind: "chat"`: the prompts were chat messages rendered with the tokenizer's chat template (whose SHA-256 is
  recorded) and `add_generation_prompt=True`; `system` is the system message every prompt started with, if any.

:meth:`PromptFormat.render` turns a bare problem string (a ProcessBench `problem`, a best-of-N question) into a
prompt rendered as training did: `problem + separator` for text, `[system?, {"role": "user", ...}]` for chat.
The scoring side (:class:`~trl_implicit_prm.inference.ProcessRewardComputer`, the CLI, the recipes) reads the
record with :func:`prompt_format_from_metadata` / :func:`append_eos_from_metadata`; checkpoints written before
these fields existed keep the old behaviour (strings as they are, no EOS), with a warning.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "PromptFormat",
    "append_eos_from_metadata",
    "measure_prompt_format",
    "override_prompt_format",
    "prompt_format_from_metadata",
    "template_sha256",
]

logger = logging.getLogger(__name__)

KINDS = ("chat", "text")
_FIELDS = {"kind", "separator", "system", "chat_template_sha256"}
_warned: set[tuple[str, str]] = set()


def _warn_once(key: tuple[str, str], message: str, *args: Any) -> None:
    if key not in _warned:
        _warned.add(key)
        logger.warning(message, *args)


def template_sha256(tokenizer: Any) -> str | None:
    """SHA-256 of the tokenizer's chat template (a string, or a dict of named templates), None without one."""
    template = getattr(tokenizer, "chat_template", None)
    if not template:
        return None
    text = template if isinstance(template, str) else repr(sorted(dict(template).items()))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class PromptFormat:
    """How training rendered its prompts: plain text ending with `separator`, or chat messages.

    Example:

    ```python
    >>> PromptFormat("text", separator="\\n").render("What is 2+3?")
    'What is 2+3?\\n'
    >>> PromptFormat("chat", system="Be brief.").render("What is 2+3?")
    [{'role': 'system', 'content': 'Be brief.'}, {'role': 'user', 'content': 'What is 2+3?'}]

    ```
    """

    kind: str
    separator: str = ""
    system: str | None = None
    chat_template_sha256: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"PromptFormat.kind must be one of {KINDS}, got {self.kind!r}")
        if not isinstance(self.separator, str):
            raise TypeError(f"PromptFormat.separator must be a string, got {type(self.separator).__name__}")
        if self.kind == "chat" and self.separator:
            raise ValueError("PromptFormat.separator applies to text prompts only; a chat prompt has none")
        if self.kind == "text" and self.system is not None:
            raise ValueError("PromptFormat.system applies to chat prompts only")

    @property
    def is_chat(self) -> bool:
        """Whether prompts are chat messages rendered with the tokenizer's template."""
        return self.kind == "chat"

    def render(self, prompt: Any) -> Any:
        """A string prompt rendered as training did; a chat prompt (a list of messages) is returned as is.

        Text: the prompt, unless it already ends with `separator`, loses its trailing whitespace and gets
        `separator` (so rendering twice changes nothing). Chat: one user message, after the recorded system
        message if any.
        """
        if not isinstance(prompt, str):
            return prompt
        if self.kind == "chat":
            user = {"role": "user", "content": prompt}
            return [{"role": "system", "content": self.system}, user] if self.system is not None else [user]
        if not self.separator or prompt.endswith(self.separator):
            return prompt
        return prompt.rstrip() + self.separator

    def to_metadata(self) -> dict[str, Any]:
        """The `prompt_format` entry of `implicit_prm.json`."""
        if self.kind == "text":
            return {"kind": "text", "separator": self.separator}
        return {"kind": "chat", "system": self.system, "chat_template_sha256": self.chat_template_sha256}

    @classmethod
    def from_metadata(cls, value: Any, source: str) -> PromptFormat:
        """Parse a recorded `prompt_format`; errors name `source` (the metadata file) and the field."""
        if not isinstance(value, Mapping):
            raise ValueError(f"{source}: 'prompt_format' must be an object, got {type(value).__name__}")
        kind = value.get("kind")
        if kind not in KINDS:
            raise ValueError(f"{source}: 'prompt_format.kind' must be one of {list(KINDS)}, got {kind!r}")
        unknown = sorted(set(value) - _FIELDS)
        if unknown:
            raise ValueError(
                f"{source}: unknown 'prompt_format' field(s) {unknown}; expected {sorted(_FIELDS)}"
            )
        if kind == "text":
            separator = value.get("separator")
            if not isinstance(separator, str):
                raise ValueError(
                    f"{source}: 'prompt_format.separator' must be a string for kind 'text', got {separator!r}"
                )
            return cls("text", separator=separator)
        for name in ("system", "chat_template_sha256"):
            if value.get(name) is not None and not isinstance(value.get(name), str):
                raise ValueError(
                    f"{source}: 'prompt_format.{name}' must be a string or null, got {value[name]!r}"
                )
        return cls("chat", system=value.get("system"), chat_template_sha256=value.get("chat_template_sha256"))


def _common_suffix(a: str, b: str) -> str:
    n = 0
    while n < min(len(a), len(b)) and a[len(a) - 1 - n] == b[len(b) - 1 - n]:
        n += 1
    return a[len(a) - n :] if n else ""


def measure_prompt_format(prompts: Iterable[Any], tokenizer: Any) -> PromptFormat | None:
    """How a set of training prompts is rendered, or None (with a warning) when they mix strings and chats.

    Text prompts: the separator is their longest common trailing whitespace. Chat prompts: the chat template's
    hash and the system message they all start with (None if they do not all start with the same one).
    """
    kinds: set[str] = set()
    separator: str | None = None
    system: str | None = None
    first_chat = True
    for prompt in prompts:
        if isinstance(prompt, str):
            kinds.add("text")
            tail = prompt[len(prompt.rstrip()) :]
            separator = tail if separator is None else _common_suffix(separator, tail)
        else:
            kinds.add("chat")
            messages = list(prompt)
            head = messages[0] if messages else {}
            this = head.get("content") if head.get("role") == "system" else None
            system = this if first_chat else (system if system == this else None)
            first_chat = False
        if len(kinds) > 1:
            logger.warning(
                "the training prompts mix plain strings and chat messages, so no single prompt rendering is "
                "recorded with the checkpoint: pass the prompt format when scoring (chat messages, or "
                "--chat-prompt / --no-chat-prompt on the command line)"
            )
            return None
    if kinds == {"text"}:
        return PromptFormat("text", separator=separator or "")
    if kinds == {"chat"}:
        return PromptFormat("chat", system=system, chat_template_sha256=template_sha256(tokenizer))
    return None


def prompt_format_from_metadata(metadata: Mapping[str, Any], source: str) -> PromptFormat | None:
    """The recorded prompt format, or None (strings scored as they are) with a warning when none is recorded."""
    value = metadata.get("prompt_format")
    if value is None:
        _warn_once(
            ("prompt_format", source),
            "%s records no prompt rendering (a checkpoint from an older version, or not a trainer checkpoint): "
            "string prompts are scored as they are. Pass the rendering explicitly if training used another one "
            "(chat messages, or --chat-prompt / --prompt-separator on the command line).",
            source,
        )
        return None
    return PromptFormat.from_metadata(value, source)


def append_eos_from_metadata(metadata: Mapping[str, Any], source: str) -> bool:
    """Whether training appended EOS to string completions; False with a warning when it is not recorded."""
    value = metadata.get("append_eos")
    if value is None:
        _warn_once(
            ("append_eos", source),
            "%s does not record whether training appended EOS to completions (a checkpoint from an older "
            "version, or not a trainer checkpoint): responses are scored without EOS. Pass append_eos=True "
            "(--append-eos) if the model was trained with it.",
            source,
        )
        return False
    if not isinstance(value, bool):
        raise ValueError(f"{source}: 'append_eos' must be true or false, got {value!r}")
    return value


def override_prompt_format(
    recorded: PromptFormat | None,
    *,
    chat_prompt: bool | None = None,
    prompt_separator: str | None = None,
    tokenizer: Any = None,
) -> PromptFormat | None:
    """The recorded format, or the one the user asked for; a warning when plain text meets a chat-trained PRM.

    `chat_prompt=True` renders strings as one user message (keeping a recorded system message);
    `chat_prompt=False` or a `prompt_separator` renders them as text ending with `prompt_separator` (default:
    the recorded text separator, else "").
    """
    if chat_prompt and prompt_separator is not None:
        raise ValueError(
            "a prompt separator applies to text prompts: do not combine it with chat_prompt=True"
        )
    if chat_prompt:
        system = recorded.system if recorded is not None and recorded.is_chat else None
        return PromptFormat("chat", system=system, chat_template_sha256=template_sha256(tokenizer))
    if chat_prompt is None and prompt_separator is None:
        return recorded
    if prompt_separator is None:
        prompt_separator = recorded.separator if recorded is not None and not recorded.is_chat else ""
    if recorded is not None and recorded.is_chat:
        logger.warning(
            "this PRM was trained on chat prompts, but string prompts will be scored as plain text (%s): its "
            "rewards are then computed on a context it never saw in training; drop the override to render "
            "them with the chat template",
            "--no-chat-prompt / prompt_separator"
            if prompt_separator == ""
            else f"separator {prompt_separator!r}",
        )
    return PromptFormat("text", separator=prompt_separator)
