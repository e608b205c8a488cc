"""reports/synthetic/findings.md says what the committed rows say (scripts/findings.py)."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).parents[1]
spec = importlib.util.spec_from_file_location("findings", ROOT / "scripts" / "findings.py")
findings = importlib.util.module_from_spec(spec)
spec.loader.exec_module(findings)


def test_every_table_is_what_its_rows_give_and_every_number_of_the_text_is_in_one():
    assert findings.main(["--check"]) == 0


def test_a_table_edited_by_hand_fails_the_check(tmp_path, capsys):
    edited = tmp_path / "findings.md"
    edited.write_text(findings.FINDINGS.read_text().replace("| accel:tiny | 95.50 |", "| accel:tiny | 95.45 |"))
    assert findings.main(["--check", "--file", str(edited)]) == 1
    assert "tables differ from the rows" in capsys.readouterr().err


def test_a_number_of_the_text_found_in_no_table_fails_the_check(tmp_path, capsys):
    edited = tmp_path / "findings.md"
    # above 200: the tables hold percentages, so it is no table value nor a difference of two
    edited.write_text(findings.FINDINGS.read_text().replace("by 8.63 points", "by 863.71 points"))
    assert findings.main(["--check", "--file", str(edited)]) == 1
    assert "numbers in the prose found in no table: 863.71" in capsys.readouterr().err


def test_differences_of_table_values_and_code_spans_are_not_flagged():
    text = "| a | 97.02 | 61.97 |\n|---|---|---|\n\nloses 35.05 points (`--noise-std 12.5`), 97.02 at k = 1\n"
    assert findings.unsupported_numbers(text) == []
    assert findings.unsupported_numbers(text + "and 12.34 more\n") == ["12.34"]


def test_a_table_the_script_defines_but_the_file_lost_fails_the_check(tmp_path, capsys):
    text = findings.FINDINGS.read_text()
    start = text.index("<!-- table stt-memory -->")
    end = text.index("<!-- /table -->", start)
    edited = tmp_path / "findings.md"
    edited.write_text(text[:start] + text[end + len("<!-- /table -->"):])
    assert findings.main(["--check", "--file", str(edited)]) == 1
    assert "tables scripts/findings.py defines but the file does not mark: stt-memory" in capsys.readouterr().err
