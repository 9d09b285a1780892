"""The README's Python quickstart, run as printed: the code block is read from README.md, and
only the server's address and key are this run's (and the import is the 1.9.x one on that
SDK line, as the quickstart's comment says)."""

import contextlib
import io
import os
import re

from conftest import KEY, SDK_MAJOR, URL

README = os.path.join(os.path.dirname(__file__), "..", "..", "..", "README.md")


def quickstart_blocks():
    """The ```python and ```text blocks of the README's Quickstart section, in order."""
    with open(README, encoding="utf-8") as handle:
        text = handle.read()
    section = text.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```(python|text)\n(.*?)```", section, re.S)


def test_the_readme_quickstart_runs_as_printed_and_prints_what_it_says(upstream):
    blocks = quickstart_blocks()
    assert [kind for kind, _ in blocks] == ["python", "text"]
    code, expected = blocks[0][1], blocks[1][1]
    code = code.replace('server_url="http://127.0.0.1:8000"', f"server_url={URL!r}")
    code = code.replace('api_key="anything"', f"api_key={KEY!r}")
    assert URL in code and KEY in code, "the quickstart still names the server and key this test replaces"
    if SDK_MAJOR < 2:
        code = code.replace("from mistralai.client import Mistral", "from mistralai import Mistral")

    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(code, "README.md#quickstart", "exec"), {})

    assert printed.getvalue() == expected
