"""`make evaluate`: says in words what is wrong with its folder, and what each table shows."""
import subprocess
import sys

from tests.conftest import ROOT, random_walk, weekdays, write_prices


def evaluate(*arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "scripts.evaluate", *arguments], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)


def test_a_missing_folder_is_named_not_answered_with_a_usage_line(tmp_path):
    done = evaluate(str(tmp_path / "nowhere"))
    assert done.returncode != 0 and f"there is no folder {str(tmp_path / 'nowhere')!r}" in done.stderr, done.stderr
    done = evaluate(str(tmp_path))
    assert done.returncode != 0 and "has no SYMBOL.csv files" in done.stderr, done.stderr


def test_each_table_ends_with_its_conclusion_in_words(tmp_path):
    days = weekdays("2020-01-02", 400)
    for seed, symbol in enumerate(["AAA", "BBB"]):
        write_prices(tmp_path, symbol, days, random_walk(seed, 400))
    done = evaluate(str(tmp_path))
    assert done.returncode == 0, done.stderr
    sentences = [line for line in done.stdout.splitlines() if line.startswith("In words: ")]
    assert len(sentences) == 2, done.stdout
    assert "erred least one day ahead" in sentences[0] and "the likely ranges held" in sentences[1]
