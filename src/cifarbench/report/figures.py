"""A report's figures: compare_time.png, compare_epoch.png and final_acc.png of each Board."""
from __future__ import annotations

import math
import statistics

from cifarbench.report.board import LEVEL, TIED, Board, Setting, completed_values
from cifarbench.report.runs import Run
from cifarbench.run.figures import new_figure, save_png


def mean_band(runs: list[Run], x: str) -> tuple[list[float], list[float], list[float], list[float]]:
    """Test accuracy of the seeds of one setting against `x` (a metrics column: "epoch" or
    "train_seconds"): at each evaluation k, the mean of x, and the mean, min and max of test_acc over
    the runs that have metrics, up to the shortest of them (no curve: four empty lists)."""
    curves = [run.rows for run in runs if run.rows]
    length = min((len(rows) for rows in curves), default=0)
    points = [[rows[k] for rows in curves] for k in range(length)]
    accuracies = [[r["test_acc"] for r in point] for point in points]
    return ([statistics.fmean(r[x] for r in point) for point in points], [statistics.fmean(a) for a in accuracies],
            [min(a) for a in accuracies], [max(a) for a in accuracies])


def setting_colours(n: int) -> list:
    """n distinct colours, one per setting, the same in every figure: tab10, tab20, else turbo's range."""
    from matplotlib import colormaps

    if n <= 20:
        palette = colormaps["tab10" if n <= 10 else "tab20"]
        return [palette(i) for i in range(n)]
    return [colormaps["turbo"](0.05 + 0.9 * i / (n - 1)) for i in range(n)]


LEGEND_ROWS = 32  # legend entries per column beside a comparison plot (fits its 500 px)


def comparison_figure(settings: list[Setting], x: str, title: str):
    """Per setting, the mean test accuracy (fraction) of its seeds at each evaluation, with their min–max
    band, against `x` ("train_seconds" or "epoch"); the legend outside the axes, on the right, in as
    many columns of LEGEND_ROWS as it needs. 900 × 500 px with one legend column, 300 px wider per more."""
    columns = max(1, math.ceil(len(settings) / LEGEND_ROWS))
    fig = new_figure(9 + 3 * (columns - 1), 5)
    fig.set_layout_engine("constrained")
    axis = fig.add_subplot()
    for setting, colour in zip(settings, setting_colours(len(settings))):
        xs, mean, low, high = mean_band(setting.runs, x)
        if xs:
            seeds = sum(bool(run.rows) for run in setting.runs)
            axis.plot(xs, mean, "o-", ms=3, color=colour,
                      label=f"{setting.short} ({seeds})" if seeds > 1 else setting.short)
            axis.fill_between(xs, low, high, color=colour, alpha=0.2, linewidth=0)
    axis.set(xlabel="training seconds" if x == "train_seconds" else "epoch", ylabel="test accuracy", title=title)
    axis.grid(alpha=0.3)
    if axis.lines:
        fig.legend(loc="outside right upper", fontsize=7, ncols=columns, title="setting (seeds)", title_fontsize=7)
    return fig


def final_acc_figure(settings: list[Setting], setting_rows: list[dict], title: str, level: float = LEVEL):
    """Per setting, a bar of the mean final test accuracy (fraction) of its completed seeds with its `level`
    confidence interval (Student's t, leaderboard.csv's final_test_acc_ci_low/high; none with one seed),
    each seed's own value a dot on it, in the setting's colour; hatched, with its status in the label, when
    not every seed completed; the settings the leaderboard cannot tell from the top marked "tied with top".
    Best at the top; 900 px wide, 35 px per bar."""
    row_of = {row["setting"]: row for row in setting_rows}
    bars = []
    for setting, colour in zip(settings, setting_colours(len(settings))):
        row = row_of[setting.label]
        ok = row["status"] == "completed"
        seeds = completed_values(setting.rows(), "final_test_acc")
        mean = row["final_test_acc_mean"]
        low, high = row["final_test_acc_ci_low"], row["final_test_acc_ci_high"]
        error = (mean - low, high - mean) if low is not None else (0, 0)
        value = f"{mean:.1%}" if seeds else "no completed seed"
        if row["vs_top"] == TIED:
            value += f", tied with top (p={row['p_vs_top']:.2g})" if row["p_vs_top"] is not None else ""
        bars.append((mean or 0, error, setting.short, ok, colour, seeds,
                     value if ok else f"{value} ({row['status']})"))
    bars.sort(key=lambda bar: bar[0])
    fig = new_figure(9, 1.2 + 0.35 * len(bars))
    fig.set_layout_engine("constrained")  # the bar labels are run labels of up to LABEL_CHARS characters
    axis = fig.add_subplot()
    for i, (mean, error, _, ok, colour, seeds, value) in enumerate(bars):
        axis.barh(i, mean, xerr=[[error[0]], [error[1]]], color=colour, hatch=None if ok else "//",
                  edgecolor="black", linewidth=0.5)
        axis.plot(seeds, [i] * len(seeds), "o", ms=3, color="black")
        # past the error bar and the seeds, leaving room for the text (about 0.009 of the axis per character)
        axis.text(min(max([mean + error[1], *seeds]), max(0.3, 0.99 - 0.009 * len(value))), i, f" {value}",
                  va="center", fontsize=8)
    axis.set_yticks(range(len(bars)), [label for _, _, label, *_ in bars], fontsize=8)
    axis.set_ylim(-0.6, len(bars) - 0.4)
    axis.set(xlabel=f"final test accuracy (mean, {level:.0%} confidence interval over seeds; dots: the seeds)",
             xlim=(0, 1), title=title)
    return fig


def plot_comparisons(board: Board, several: bool):
    """compare_time.png, compare_epoch.png and final_acc.png of `board` (file names as in board.figures);
    titles name the test set when the report has several."""
    where = f" — test set {board.test_set}" if several else ""
    time_png, epoch_png, final_png = board.figures
    save_png(comparison_figure(board.settings, "train_seconds", f"Test accuracy against training time{where}"),
             time_png)
    save_png(comparison_figure(board.settings, "epoch", f"Test accuracy against epoch{where}"), epoch_png)
    save_png(final_acc_figure(board.settings, board.setting_rows, f"Final test accuracy per setting{where}",
                              board.level), final_png)
