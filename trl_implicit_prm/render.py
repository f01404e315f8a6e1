"""A picture of step rewards: a self-contained HTML page colouring every step and every token by its reward.

The page has inline CSS only (no script, no network resource), so it can be opened offline, attached to a
report, or shown in a notebook (:meth:`StepRewards._repr_html_` embeds the same markup). Colours follow a
diverging red-white-blue map centred on 0 (red: negative, blue: positive, colour-blind safe); steps and tokens
have separate scales (page-wide maximum absolute value, shown in the legend). The first step whose reward is
strictly below `threshold` is framed in red and tagged "first error?", the ProcessBench reading of a PRM.

Example:

```python
>>> from trl_implicit_prm.inference import StepRewards
>>> r = StepRewards(steps=["2+3=5.\\n\\n", "So <6>."], step_rewards=[0.2, -0.1], q_values=[0.2, 0.1],
...                 token_rewards=[0.2, -0.1], tokens=["2+3=5.\\n\\n", "So <6>."], token_steps=[0, 1],
...                 outcome_reward=0.1)
>>> page = render_html([r], prompts=["What is 2+3?"])
>>> "first error?" in page and "So &lt;6&gt;." in page and "<script" not in page
True

```
"""

from __future__ import annotations

import html
import itertools
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["color_for", "render_html", "save_html"]

# RdBu anchors (ColorBrewer), from -1 to +1.
_ANCHORS = (
    (-1.0, (178, 24, 43)),
    (-0.5, (239, 138, 98)),
    (0.0, (247, 247, 247)),
    (0.5, (103, 169, 207)),
    (1.0, (33, 102, 172)),
)

_CSS = """
.iprm { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1f2328; max-width: 1100px;
  margin: 0 auto; padding: 12px; line-height: 1.45; }
.iprm h1 { font-size: 1.35em; margin: 0.2em 0 0.6em; }
.iprm-legend { display: flex; flex-wrap: wrap; gap: 18px; align-items: center; font-size: 0.85em; color: #57606a;
  border: 1px solid #d0d7de; border-radius: 6px; padding: 8px 12px; margin-bottom: 14px; }
.iprm-bar { display: inline-block; width: 160px; height: 12px; border-radius: 3px; vertical-align: middle;
  margin: 0 6px; background: linear-gradient(to right, rgb(178,24,43), rgb(239,138,98), rgb(247,247,247),
  rgb(103,169,207), rgb(33,102,172)); border: 1px solid #d0d7de; }
.iprm-example { border: 1px solid #d0d7de; border-radius: 8px; padding: 10px 12px; margin-bottom: 16px; }
.iprm-head { display: flex; flex-wrap: wrap; gap: 14px; align-items: baseline; margin-bottom: 6px; }
.iprm-head .iprm-id { font-weight: 600; }
.iprm-num { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 0.92em; }
.iprm-prompt { margin: 4px 0 8px; font-size: 0.9em; color: #57606a; }
.iprm-prompt pre { white-space: pre-wrap; margin: 4px 0; background: #f6f8fa; padding: 6px 8px; border-radius: 4px; }
.iprm-step { display: grid; grid-template-columns: 150px 1fr; gap: 10px; margin: 4px 0; padding: 5px 8px;
  border: 2px solid transparent; border-left-width: 8px; border-radius: 5px; background: #fff; }
.iprm-step.iprm-error { border-color: #cf222e; box-shadow: 0 0 0 1px #cf222e inset; }
.iprm-meta { font-size: 0.82em; color: #57606a; }
.iprm-meta .iprm-badge { display: inline-block; border-radius: 4px; padding: 1px 6px; font-weight: 600;
  font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 1.1em; }
.iprm-tag { display: inline-block; margin-top: 3px; background: #cf222e; color: #fff; border-radius: 10px;
  padding: 0 7px; font-size: 0.95em; font-weight: 600; }
.iprm-text { white-space: pre-wrap; word-break: break-word;
  font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 0.9em; }
.iprm-text span { border-radius: 2px; }
.iprm-nl { color: #8c959f; }
.iprm-unscored { opacity: 0.55; border-left-color: #d0d7de; background: repeating-linear-gradient(
  45deg, #fff, #fff 6px, #f6f8fa 6px, #f6f8fa 12px); }
.iprm-warn { background: #fff8c5; border: 1px solid #d4a72c; border-radius: 4px; padding: 3px 8px;
  font-size: 0.88em; margin: 4px 0; }
"""


def color_for(value: float, scale: float) -> tuple[int, int, int]:
    """RGB of `value` on the diverging map spanning [-scale, scale] (clipped; white at 0 and for NaN)."""
    if not math.isfinite(value) or scale <= 0:
        return _ANCHORS[2][1]
    x = max(-1.0, min(1.0, value / scale))
    for (x0, c0), (x1, c1) in itertools.pairwise(_ANCHORS):
        if x <= x1:
            w = (x - x0) / (x1 - x0)
            return tuple(round(a + (b - a) * w) for a, b in zip(c0, c1, strict=True))  # type: ignore[return-value]
    return _ANCHORS[-1][1]


def _css_color(value: float, scale: float) -> str:
    r, g, b = color_for(value, scale)
    return f"rgb({r},{g},{b})"


def _ink(value: float, scale: float) -> str:
    """Text colour readable on the background of `value`."""
    return "#fff" if scale > 0 and math.isfinite(value) and abs(value) / scale > 0.6 else "#1f2328"


def _fmt(x: float) -> str:
    return "nan" if not math.isfinite(x) else f"{x:+.4f}"


def _esc(text: str) -> str:
    return html.escape(text, quote=True)


def _prompt_text(prompt: Any) -> str:
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list | tuple):
        return "\n".join(
            f"[{m.get('role', '?')}] {m.get('content', '')}" for m in prompt if isinstance(m, dict)
        )
    return str(prompt)


def _get(result: Any, name: str, default: Any = None) -> Any:
    return result.get(name, default) if isinstance(result, dict) else getattr(result, name, default)


def _token_html(text: str, reward: float, scale: float, breaks_before: int) -> str:
    # Newlines show as a faint ↵; those before character `breaks_before` of the token also break the line (the
    # separator after a step's last character does not: each step is its own block).
    out, pos = [], 0
    for j, part in enumerate(text.split("\n")):
        if j:
            out.append('<span class="iprm-nl">↵</span>' + ("\n" if pos - 1 < breaks_before else ""))
        out.append(_esc(part))
        pos += len(part) + 1
    return (
        f'<span style="background:{_css_color(reward, scale)};color:{_ink(reward, scale)}" '
        f'title="token reward {_fmt(reward)}">{"".join(out)}</span>'
    )


def _step_tokens(result: Any, k: int, token_scale: float) -> str:
    tokens, rewards, steps = (
        _get(result, "tokens") or [],
        _get(result, "token_rewards") or [],
        _get(result, "token_steps") or [],
    )
    picked = [(t, r) for t, r, s in zip(tokens, rewards, steps, strict=False) if s == k]
    if not picked:
        return _esc(_get(result, "steps")[k])
    content_end = len("".join(t for t, _ in picked).rstrip())
    out, offset = [], 0
    for t, r in picked:
        out.append(_token_html(t, r, token_scale, content_end - offset))
        offset += len(t)
    return "".join(out)


def _example_html(
    i: int, result: Any, prompt: Any, threshold: float, step_scale: float, token_scale: float
) -> str:
    steps, rewards, qs = _get(result, "steps"), _get(result, "step_rewards"), _get(result, "q_values") or []
    outcome = float(_get(result, "outcome_reward", sum(rewards)))
    first = next((k for k, r in enumerate(rewards) if r < threshold), -1)
    head = [
        f'<span class="iprm-id">#{i}</span>',
        f'<span>outcome reward <b class="iprm-num">{_fmt(outcome)}</b></span>',
        f'<span>min step <span class="iprm-num">{_fmt(min(rewards)) if rewards else "nan"}</span></span>',
        f"<span>{len(rewards)} steps</span>",
        f"<span>first step below {threshold:g}: <b>{'none' if first < 0 else f'step {first + 1}'}</b></span>",
    ]
    parts = [f'<section class="iprm-example"><div class="iprm-head">{"".join(head)}</div>']
    if prompt is not None:
        parts.append(
            f'<details class="iprm-prompt" open><summary>Prompt</summary><pre>'
            f"{_esc(_prompt_text(prompt))}</pre></details>"
        )
    unscored = list(_get(result, "unscored_steps") or [])
    if _get(result, "truncated", False):
        parts.append(
            f'<div class="iprm-warn">Truncated to fit max_length: {_get(result, "num_truncated_steps", 0)}'
            f" step(s) lost tokens, {len(unscored)} step(s) not scored at all.</div>"
        )
    partial = bool(_get(result, "truncated", False)) and _get(result, "num_truncated_steps", 0) > len(
        unscored
    )
    for k, (text, r) in enumerate(zip(steps, rewards, strict=True)):
        q = qs[k] if k < len(qs) else math.nan
        tag = '<div><span class="iprm-tag">first error?</span></div>' if k == first else ""
        if partial and k == len(steps) - 1:
            tag += "<div>partly scored (truncated)</div>"
        parts.append(
            f'<div class="iprm-step{" iprm-error" if k == first else ""}" '
            f'style="border-left-color:{_css_color(r, step_scale)}" title="{_esc(text[:200])}">'
            f'<div class="iprm-meta"><span class="iprm-badge" style="background:{_css_color(r, step_scale)};'
            f'color:{_ink(r, step_scale)}">step {k + 1} {_fmt(r)}</span><div>q = '
            f'<span class="iprm-num">{_fmt(q)}</span></div>{tag}</div>'
            f'<div class="iprm-text">{_step_tokens(result, k, token_scale)}</div></div>'
        )
    for j, text in enumerate(unscored):
        parts.append(
            f'<div class="iprm-step iprm-unscored"><div class="iprm-meta">step {len(steps) + j + 1}<br>'
            f'not scored (truncated)</div><div class="iprm-text">{_esc(text)}</div></div>'
        )
    parts.append("</section>")
    return "".join(parts)


def _scale(values: Sequence[float]) -> float:
    finite = [abs(v) for v in values if math.isfinite(v)]
    return max(finite, default=0.0) or 1.0


def render_html(
    results: Sequence[Any],
    prompts: Sequence[Any] | None = None,
    threshold: float = 0.0,
    title: str = "Implicit PRM step rewards",
    full_page: bool = True,
) -> str:
    """HTML showing each result's steps and tokens coloured by reward, with numbers and a legend.

    `results` are :class:`~trl_implicit_prm.StepRewards` (or their `to_dict()`); `prompts`, when given, is
    aligned with them. `full_page=False` returns a `<div>` fragment with scoped CSS (for notebooks).
    """
    results = list(results)
    if prompts is not None and len(prompts) != len(results):
        raise ValueError(
            f"prompts must be aligned with results: got {len(prompts)} prompts for {len(results)} results"
        )
    step_scale = _scale([r for res in results for r in _get(res, "step_rewards")])
    token_scale = _scale([r for res in results for r in (_get(res, "token_rewards") or [])])
    legend = (
        '<div class="iprm-legend">'
        f'<span>step reward <span class="iprm-num">{_fmt(-step_scale)}</span><span class="iprm-bar"></span>'
        f'<span class="iprm-num">{_fmt(step_scale)}</span></span>'
        f'<span>token reward <span class="iprm-num">{_fmt(-token_scale)}</span><span class="iprm-bar"></span>'
        f'<span class="iprm-num">{_fmt(token_scale)}</span></span>'
        f'<span><span class="iprm-tag">first error?</span> first step with reward &lt; {threshold:g}</span>'
        "<span>↵ newline · hover a token for its reward</span></div>"
    )
    body = "".join(
        _example_html(i + 1, res, None if prompts is None else prompts[i], threshold, step_scale, token_scale)
        for i, res in enumerate(results)
    )
    fragment = f'<div class="iprm"><style>{_CSS}</style><h1>{_esc(title)}</h1>{legend}{body}</div>'
    if not full_page:
        return fragment
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{_esc(title)}</title>'
        f"</head><body>{fragment}</body></html>\n"
    )


def save_html(results: Sequence[Any], path: str | os.PathLike, **kwargs: Any) -> Path:
    """Write :func:`render_html` to `path` (UTF-8) and return the path."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_html(results, **kwargs), encoding="utf-8")
    return out
