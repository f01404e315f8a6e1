"""render.py: a self-contained HTML page with escaped text, colours by reward and the first step below τ marked."""

from __future__ import annotations

import re

import pytest

from trl_implicit_prm.inference import StepRewards
from trl_implicit_prm.render import color_for, render_html, save_html


def result(step_rewards, steps=None, truncated=False, unscored=()):
    steps = steps or [f"Step {k}." for k in range(len(step_rewards))]
    q, acc = [], 0.0
    for r in step_rewards:
        acc += r
        q.append(acc)
    return StepRewards(
        steps=steps,
        step_rewards=list(step_rewards),
        q_values=q,
        token_rewards=list(step_rewards),
        tokens=list(steps),
        token_steps=list(range(len(steps))),
        outcome_reward=acc,
        truncated=truncated,
        num_truncated_steps=len(unscored) + (1 if truncated else 0),
        unscored_steps=list(unscored),
    )


def test_page_is_self_contained_and_escaped():
    evil = "<script>alert('x')</script> & \"quotes\""
    page = render_html(
        [result([0.2, -0.1], steps=[evil, "ok\n\n"])],
        prompts=[[{"role": "user", "content": "<b>"}]],
        title="T <1>",
    )
    assert "<script" not in page and "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page
    assert "&lt;b&gt;" in page and "<title>T &lt;1&gt;</title>" in page
    assert not re.search(r"(src|href)\s*=|https?://|@import", page)  # nothing fetched from anywhere


def test_first_step_below_threshold_is_marked_once():
    page = render_html([result([0.3, 0.1, -0.2, -0.5])], threshold=0.0)
    assert (
        page.count('class="iprm-step iprm-error"') == 1 and page.count(">first error?<") == 2
    )  # tag + legend
    marked = re.search(r'class="iprm-step iprm-error".*?step (\d) ', page).group(1)
    assert marked == "3"  # the first strictly negative step (1-based)
    assert "first step below 0: <b>step 3</b>" in page
    assert 'class="iprm-step iprm-error"' not in render_html([result([0.3, 0.1])], threshold=0.0)
    # A higher threshold moves the mark earlier; equality is not "below".
    assert "first step below 0.3: <b>step 2</b>" in render_html([result([0.3, 0.1])], threshold=0.3)


def test_numbers_colours_and_legend():
    page = render_html([result([0.5, -0.25]), result([1.0])])
    assert "+0.2500" in page and "-0.2500" in page and "+1.0000" in page  # step rewards and outcome
    assert 'step reward <span class="iprm-num">-1.0000</span>' in page  # page-wide symmetric scale
    assert color_for(0.0, 1.0) == (247, 247, 247)
    assert color_for(-1.0, 1.0) == (178, 24, 43) and color_for(-5.0, 1.0) == (178, 24, 43)
    assert color_for(1.0, 1.0) == (33, 102, 172)
    r, _, b = color_for(0.25, 1.0)
    assert b > r  # positive is blue-ish
    assert color_for(float("nan"), 1.0) == (247, 247, 247)


def test_truncated_and_unscored_steps_shown():
    page = render_html([result([0.1], steps=["kept"], truncated=True, unscored=["lost <step>"])])
    assert (
        "Truncated to fit max_length" in page
        and "not scored (truncated)" in page
        and "lost &lt;step&gt;" in page
    )
    assert "partly scored" in page  # 2 steps lost tokens, 1 entirely: the last scored step is partial
    whole = result([0.1], steps=["kept"], truncated=True, unscored=["lost"])
    whole.num_truncated_steps = 1
    assert "partly scored" not in render_html([whole])


def test_save_html_and_fragment(tmp_path):
    path = save_html(
        [result([0.1, 0.2]), result([-0.3]).to_dict()], tmp_path / "sub" / "page.html", prompts=["p1", "p2"]
    )
    text = path.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>") and text.count('class="iprm-example"') == 2
    fragment = render_html([result([0.1])], full_page=False)
    assert fragment.startswith('<div class="iprm">') and "<html" not in fragment
    with pytest.raises(ValueError, match="aligned"):
        render_html([result([0.1])], prompts=["a", "b"])
