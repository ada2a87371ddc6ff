"""Every example in the public docstrings runs and gives the output it shows."""

from __future__ import annotations

import doctest
import importlib

import numpy as np
import pytest

import bytepair

MODULES = [
    "bytepair",
    "bytepair.core",
    "bytepair.load",
    "bytepair.registry",
    "bytepair.model",
    "bytepair.train",
    "bytepair.embed",
    "bytepair.corpus",
    "bytepair._tiktoken",
]


@pytest.mark.parametrize("module_name", MODULES)
def test_docstring_examples(module_name: str, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # examples write small files such as "my-tokenizer/"
    module = importlib.import_module(module_name)
    globs = dict(vars(module))
    globs.update(np=np, bytepair=bytepair, enc=bytepair.get_encoding("cl100k_base"), Encoding=bytepair.Encoding)
    if module_name == "bytepair.train":
        globs["load"] = module.load
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    tests = doctest.DocTestFinder().find(module, module_name, globs=globs)
    for t in tests:
        if t.name.endswith(("Encoding.save", "Encoding.to_huggingface")):
            t.globs["enc"] = bytepair.train(["hello world"] * 20, vocab_size=260, progress=False)
        if "to_huggingface" in t.name:
            pytest.importorskip("tokenizers")
        runner.run(t)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} failing docstring examples in {module_name}"
    assert result.attempted > 0 or module_name in ("bytepair.registry",)
