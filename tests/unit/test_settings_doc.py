from scripts.gen_settings_doc import DOC, render


def test_settings_doc_is_current() -> None:
    assert DOC.read_text(encoding="utf-8") == render(), "run: python scripts/gen_settings_doc.py"
