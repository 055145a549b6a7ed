"""Every relative link in README.md and docs/*.md leads somewhere: the README is the front door and the rest
lives in docs/, so a moved section must not leave a link (or a #anchor) pointing at nothing."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def prose(text: str, code: bool = False) -> list[str]:
    """The lines outside fenced code blocks, with inline code removed (a `[x](y)` there is not a link) or,
    with ``code``, only its backticks (a heading's id keeps the code's text)."""
    lines, fence = [], False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fence = not fence
        elif not fence:
            lines.append(line.replace("`", "") if code else re.sub(r"`[^`]*`", "", line))
    return lines


def anchors(path: Path) -> set[str]:
    """GitHub's heading ids: lower case, punctuation dropped, spaces to hyphens, repeats numbered."""
    found: set[str] = set()
    for line in prose(path.read_text(), code=True) if path.suffix == ".md" else []:
        if m := re.match(r"#{1,6} (.+)", line):
            slug = base = re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-")
            n = 0
            while slug in found:
                n += 1
                slug = f"{base}-{n}"
            found.add(slug)
    return found


def broken_links(files: list[Path], root: Path = ROOT) -> list[str]:
    broken = []
    for page in files:
        for line in prose(page.read_text()):
            for target in LINK.findall(line):
                if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
                    continue
                file, _, anchor = target.partition("#")
                dest = (page.parent / file).resolve() if file else page
                if not dest.exists():
                    broken.append(f"{page.relative_to(root)}: {target}: no such file")
                elif anchor and anchor not in anchors(dest):
                    broken.append(f"{page.relative_to(root)}: {target}: no heading #{anchor}")
    return broken


def test_every_relative_link_resolves() -> None:
    assert not broken_links(pages())


def test_a_broken_link_is_caught(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "# Here, `now`\n\n## Here, now\n\n[a](page.md#here-now) [b](#here-now-1) [c](gone.md) "
        "[d](#nowhere) `[e](skipped.md)` [f](https://example.com/x)\n"
    )
    assert broken_links([page], tmp_path) == [
        "page.md: gone.md: no such file",
        "page.md: #nowhere: no heading #nowhere",
    ]
