"""The README's callback snippet runs as written."""
import os
import re
import warnings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_readme_callback_snippet_runs():
    text = open(os.path.join(ROOT, "README.md")).read()
    section = text.split("## SeLa callbacks in your own Lightning trainer", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    namespace: dict = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        exec(compile(code, "README.md", "exec"), namespace)
    callback = namespace["trainer"].callbacks[0]
    assert callback.rounds_done == [0, 1]
    counts = callback.labels[0].bincount(minlength=10)
    assert counts.max() - counts.min() <= 1  # balanced self-labels
