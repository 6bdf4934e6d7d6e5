"""``stbench report``: tables, figures and the published-numbers comparison, from the results store alone.

Writes ``tables/<name>.tex|.md|.csv``, ``tables/reference_comparison.md|.csv``, ``figures/<name>.pdf|.png``
and ``report.md`` (the protocol audit, every Markdown table, the comparison and the figure list) under the
output folder; the audit is also written alone as ``protocol_audit.md``, whatever tables were chosen.
A table or figure the store has no data for is skipped with the reason, never written empty.
"""
from __future__ import annotations

from pathlib import Path

from stbench import UserError
from stbench.report import plots, reference, tables
from stbench.report.audit import audit_markdown
from stbench.report.frame import load_frame
from stbench.report.render import to_csv, to_latex, to_markdown

TABLES = (*tables.BUILDERS, "reference")
PLOTS = tuple(plots.PLOTS)


def choose(text: str | None, known: tuple, what: str) -> list[str]:
    """``all`` (or None), ``none``, or a comma-separated selection of ``known`` names."""
    if text is None or text == "all":
        return list(known)
    if text == "none":
        return []
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise UserError(f"unknown {what} {', '.join(unknown)}; choose from {', '.join(known)}, all or none")
    return names


def write_report(results: str | Path, out: str | Path | None = None, table_names: list[str] = TABLES,
                 plot_names: list[str] = PLOTS, reference_dir: str | Path | None = None, say=print) -> list[Path]:
    """Write the chosen tables and figures; ``say`` gets one line per file written or item skipped."""
    df = load_frame(results)
    out = Path(out) if out is not None else Path(results) / "report"
    audit = audit_markdown(df)
    written, sections = _write(out / "protocol_audit.md", audit, say), [audit]
    for name in (n for n in table_names if n in tables.BUILDERS):
        built = _unique(tables.BUILDERS[name](df))
        if not built:
            say(f"skipped table {name}: {tables.SKIPPED[name]}")
        for table in built:
            written += _write_table(table, out / "tables", say)
            sections.append(to_markdown(table))
    if "reference" in table_names:
        ref = reference.load_reference(Path(reference_dir) if reference_dir else reference.default_dir())
        pairs = reference.side_by_side(df, ref)
        text = reference.comparison_markdown(df, ref, pairs)
        written += _write(out / "tables" / "reference_comparison.md", text, say)
        if not pairs.empty:
            csv_text = pairs.to_csv(index=False, float_format="%.6g")
            written += _write(out / "tables" / "reference_comparison.csv", csv_text, say)
        sections.append(text)
    figures = _write_figures(df, plot_names, out / "figures", say)
    written += figures
    sections.append("## Figures\n\n" + "".join(f"- [{p.name}](figures/{p.name})\n" for p in figures if
                                                 p.suffix == ".png"))
    written += _write(out / "report.md", "# stbench report\n\n" + "\n".join(sections), say)
    return written


def _unique(built: list) -> list:
    """Give tables that share a file name a numeric suffix."""
    seen: dict[str, int] = {}
    for table in built:
        seen[table.name] = seen.get(table.name, 0) + 1
        if seen[table.name] > 1:
            table.name = f"{table.name}_{seen[table.name]}"
    return built


def _write_table(table, folder: Path, say) -> list[Path]:
    paths = []
    for suffix, text in ((".tex", to_latex(table)), (".md", to_markdown(table)), (".csv", to_csv(table))):
        paths += _write(folder / f"{table.name}{suffix}", text, say)
    return paths


def _write(path: Path, text: str, say) -> list[Path]:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    say(f"wrote {path}")
    return [path]


def _write_figures(df, names: list[str], folder: Path, say) -> list[Path]:
    palette = plots.colours(df["method"])
    paths = []
    for name in names:
        fig = plots.PLOTS[name](df, palette)
        if fig is None:
            say(f"skipped figure {name}: {plots.SKIPPED[name]}")
            continue
        for path in plots.save(fig, folder, name):
            say(f"wrote {path}")
            paths.append(path)
    return paths
