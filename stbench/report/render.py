"""A table as data (columns, grouped rows, cells) and its LaTeX (booktabs), Markdown and CSV forms.

Builders in ``tables.py`` fill a ``Table``; ``mark`` ranks the cells (best bold, second underlined);
the three renderers only format. A cell shows ``mean ± std`` (std omitted for one run), an optional
change in % against full-data training, or its status: O.O.M., failed, n/a (incompatible), or a dash.
A cell whose method could not reach the budget is marked ‡, explained in the caption, and not ranked.
A cell may carry a ``text`` shown instead of its number (e.g. "never" for a break-even count), and a row
a superscript ``mark`` after its label (the label source of its training targets, explained in the caption).
"""
from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field

from tabulate import tabulate

STATUS_TEXT = {"oom": "O.O.M.", "failed": "failed", "incompatible": "n/a", "missing": "–"}
STATUS_NOTES = {
    "oom": "O.O.M.: out of memory",
    "failed": "failed: the run raised an error",
    "incompatible": "n/a: the evaluation model cannot train on this reduced set",
    "missing": "–: not run",
}
PARTIAL_NOTE = "†: some runs of the cell did not finish; mean over the others"
UNMET_NOTE = "‡: the method could not reach the cell's budget, so the cell is not ranked"


@dataclass
class Column:
    key: tuple
    group: str
    label: str
    decimals: int = 3
    better: str | None = "lower"    # "lower", "higher", or None (not ranked)


@dataclass
class Cell:
    mean: float = math.nan
    std: float = math.nan
    n: int = 0
    status: str = "missing"
    partial: bool = False
    change: float = math.nan        # % against full-data training (positive: higher error)
    mark: str = ""                  # "best" | "second" | ""
    unmet: str = ""                 # why the cell's budget was not met (not ranked), e.g. "kept 41.6% for r=10%"
    text: str = ""                  # shown instead of the number (not ranked), e.g. "never"


@dataclass
class Row:
    key: str
    label: str
    cells: dict = field(default_factory=dict)
    ranked: bool = True
    mark: str = ""                  # superscript after the label, e.g. "E" (expert-relabelled targets)


@dataclass
class Table:
    name: str
    title: str
    caption: str
    stub: str
    columns: list[Column]
    groups: list[tuple[str, list[Row]]]
    rank_scope: str = "table"       # rank within the whole "table", each "group", or each "row"

    def rows(self) -> list[Row]:
        return [row for _, rows in self.groups for row in rows]

    def cell(self, row: Row, column: Column) -> Cell:
        return row.cells.get(column.key, Cell())


def mark(table: Table) -> Table:
    """Mark the best and second-best values (as displayed) of every ranked column in the table's scope."""
    scopes = {"table": [table.rows()], "group": [rows for _, rows in table.groups],
              "row": [[row] for row in table.rows()]}[table.rank_scope]
    ranked = [c for c in table.columns if c.better]
    for rows in scopes:
        rows = [r for r in rows if r.ranked]
        if table.rank_scope == "row":
            for row in rows:
                _mark_cells([(table.cell(row, c), c) for c in ranked])
        else:
            for col in ranked:
                _mark_cells([(table.cell(r, col), col) for r in rows])
    return table


def _mark_cells(pairs: list[tuple[Cell, Column]]) -> None:
    shown = [(round(cell.mean, col.decimals) * (1 if col.better == "lower" else -1), cell)
             for cell, col in pairs if cell.status == "ok" and math.isfinite(cell.mean) and not cell.unmet
             and not cell.text]
    order = sorted({value for value, _ in shown})
    for value, cell in shown:
        cell.mark = "best" if value == order[0] else "second" if len(order) > 1 and value == order[1] else ""


def legend(table: Table) -> str:
    """Status notes for the symbols that occur in the table."""
    cells = [table.cell(r, c) for r in table.rows() for c in table.columns]
    notes = [STATUS_NOTES[s] for s in STATUS_NOTES if any(cell.status == s for cell in cells)]
    if any(cell.partial for cell in cells):
        notes.append(PARTIAL_NOTE)
    unmet = dict.fromkeys(f"{row.label} ({col.group}): {cell.unmet}" for row in table.rows()
                          for col in table.columns if (cell := table.cell(row, col)).unmet)
    if unmet:
        notes.append(f"{UNMET_NOTE} ({'; '.join(unmet)})")
    return "; ".join(notes) + "." if notes else ""


def cell_text(cell: Cell, column: Column, latex: bool = False) -> str:
    if cell.text and cell.status == "ok":
        return escape(cell.text) if latex else cell.text
    if cell.status != "ok" or not math.isfinite(cell.mean):
        text = STATUS_TEXT.get(cell.status, STATUS_TEXT["missing"])
        return escape(text) if latex else text
    d = column.decimals
    text = f"{cell.mean:.{d}f}"
    if cell.n > 1 and math.isfinite(cell.std):
        text += f" ± {cell.std:.{d}f}"
    change = f"({cell.change:+.1f}%)" if math.isfinite(cell.change) else ""
    if latex:
        text = escape(text) + (r" {\scriptsize" + escape(change) + "}" if change else "")
        text += r"$^\dagger$" if cell.partial else ""
        text += r"$^\ddagger$" if cell.unmet else ""
        return {"best": r"\textbf{%s}", "second": r"\underline{%s}"}.get(cell.mark, "%s") % text
    text += (" " + change if change else "") + ("†" if cell.partial else "") + ("‡" if cell.unmet else "")
    return {"best": "**%s**", "second": "<u>%s</u>"}.get(cell.mark, "%s") % text


_LATEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
          "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
          "±": r"$\pm$", "×": r"$\times$", "†": r"$^\dagger$", "‡": r"$^\ddagger$", "ε": r"$\epsilon$", "–": "--",
          "≤": r"$\leq$", "−": r"$-$", "⌈": r"$\lceil$", "⌉": r"$\rceil$"}


def escape(text: str) -> str:
    """Plain text (with ±, ×, †, ε) to LaTeX that pdflatex compiles without extra packages."""
    return "".join(_LATEX.get(ch, ch) for ch in str(text))


def to_latex(table: Table) -> str:
    ncols = len(table.columns)
    lines = [f"% Generated by `stbench report` ({table.name}); needs \\usepackage{{booktabs}}.",
             r"\begin{table}[t]", r"\centering", r"\small",
             rf"\caption{{{escape(table.title)}. {escape(table.caption)}}}", rf"\label{{tab:{table.name}}}",
             r"\begin{tabular}{l" + "r" * ncols + "}", r"\toprule"]
    lines += _latex_header(table)
    for group, rows in table.groups:
        lines.append(r"\midrule")
        if group:
            lines.append(rf"\multicolumn{{{ncols + 1}}}{{l}}{{\textit{{{escape(group)}}}}} \\")
        for row in rows:
            cells = [cell_text(table.cell(row, c), c, latex=True) for c in table.columns]
            label = escape(row.label) + (rf"$^{{\mathrm{{{escape(row.mark)}}}}}$" if row.mark else "")
            lines.append(" & ".join([label] + cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def _latex_header(table: Table) -> list[str]:
    labels = " & ".join([escape(table.stub)] + [escape(c.label) for c in table.columns]) + r" \\"
    spans = _spans(table.columns)
    if not any(group for group, _, _ in spans):
        return [labels]
    tops, rules = [""], []
    for group, start, width in spans:
        tops.append(rf"\multicolumn{{{width}}}{{c}}{{{escape(group)}}}" if width > 1 else escape(group))
        if group:
            rules.append(rf"\cmidrule(lr){{{start + 2}-{start + width + 1}}}")
    return [" & ".join(tops) + r" \\", " ".join(rules), labels]


def _spans(columns: list[Column]) -> list[tuple[str, int, int]]:
    """(group, first column index, width) for each run of columns with the same group."""
    spans: list[list] = []
    for i, column in enumerate(columns):
        if spans and spans[-1][0] == column.group:
            spans[-1][2] += 1
        else:
            spans.append([column.group, i, 1])
    return [tuple(s) for s in spans]


def to_markdown(table: Table) -> str:
    headers = [table.stub] + [f"{c.group} {c.label}".strip() for c in table.columns]
    body = []
    for group, rows in table.groups:
        if group:
            body.append([f"*{group}*"] + [""] * len(table.columns))
        body += [[row.label + (f"<sup>{row.mark}</sup>" if row.mark else "")]
                 + [cell_text(table.cell(row, c), c) for c in table.columns] for row in rows]
    grid = tabulate(body, headers=headers, tablefmt="pipe", colalign=["left"] + ["right"] * len(table.columns),
                    disable_numparse=True)
    return f"**{table.title}.** {table.caption}\n\n{grid}\n"


CSV_FIELDS = ("table", "group", "row_key", "row", "column_group", "column", "mean", "std", "n", "status",
              "partial", "change_pct", "mark", "unmet", "text", "row_mark")


def to_csv(table: Table) -> str:
    """Tidy CSV: one line per cell, numbers unformatted (6 significant digits)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_FIELDS)
    for group, rows in table.groups:
        for row in rows:
            for col in table.columns:
                cell = table.cell(row, col)
                writer.writerow([table.name, group, row.key, row.label, col.group, col.label, _num(cell.mean),
                                 _num(cell.std), cell.n, cell.status, int(cell.partial), _num(cell.change),
                                 cell.mark, cell.unmet, cell.text, row.mark])
    return out.getvalue()


def _num(value: float) -> str:
    return f"{value:.6g}" if math.isfinite(value) else ""
