"""Leaderboards that state their noise: Student's t intervals, Welch's test against the top setting, the
one-sided test against a target and the seeds it needs, held to SciPy and to values computed by hand."""
import csv
import math

import pytest
from helpers import fake_run
from scipy import stats as scipy_stats

from cifarbench.report import stats

# Student's t quantiles from a printed table (e.g. NIST/SEMATECH e-Handbook 1.3.6.7.2): t_{0.975, 2},
# t_{0.95, 3}, t_{0.95, 4}.
T_975_2, T_95_3, T_95_4 = 4.303, 2.353, 2.132


@pytest.mark.parametrize("df", [1, 2, 3, 4.7, 9, 29.5, 200, 1e5])
def test_the_t_distribution_matches_scipy(df):
    for t in (-40.0, -3.0, -0.5, 0.0, 0.1, 1.0, 2.5, 10.0, 300.0):
        assert stats.t_sf(t, df) == pytest.approx(scipy_stats.t.sf(t, df), rel=1e-9, abs=1e-12)
    for p in (0.0005, 0.025, 0.5, 0.9, 0.975, 0.9995):
        assert stats.t_ppf(p, df) == pytest.approx(scipy_stats.t.ppf(p, df), rel=1e-9, abs=1e-12)
    with pytest.raises(ValueError, match="in \\(0, 1\\), not 1.5"):
        stats.t_ppf(1.5, df)


def test_interval_welch_and_one_sided_test_by_hand_and_by_scipy():
    a, b = [0.90, 0.92, 0.94], [0.89, 0.90, 0.91]
    # by hand: mean 0.92, s = 0.02, half width t_{0.975,2} · s / √3
    low, high = stats.mean_interval(a)
    assert (low, high) == pytest.approx((0.92 - T_975_2 * 0.02 / math.sqrt(3), 0.92 + T_975_2 * 0.02 / math.sqrt(3)),
                                        abs=2e-5)
    assert (low, high) == pytest.approx(scipy_stats.t.interval(0.95, 2, loc=0.92, scale=0.02 / math.sqrt(3)), rel=1e-9)
    assert stats.mean_interval([0.9]) is None
    # Welch by hand: se² = 0.02²/3 + 0.01²/3, df = se⁴ / ((0.02²/3)²/2 + (0.01²/3)²/2)
    t, df, p = stats.welch(a, b)
    se2 = 0.0004 / 3 + 0.0001 / 3
    assert t == pytest.approx(0.02 / math.sqrt(se2), rel=1e-9)
    assert df == pytest.approx(se2 ** 2 / ((0.0004 / 3) ** 2 / 2 + (0.0001 / 3) ** 2 / 2), rel=1e-9)
    expected = scipy_stats.ttest_ind(a, b, equal_var=False)
    assert (t, p) == pytest.approx((expected.statistic, expected.pvalue), rel=1e-9)
    assert stats.welch(a, [0.9]) is None
    assert stats.welch([0.9, 0.9], [0.8, 0.8])[2] == 0.0 and stats.welch([0.9, 0.9], [0.9, 0.9])[2] == 1.0
    # one-sided against 0.9: t = 0.02 / (0.02/√3) = √3 with 2 degrees of freedom
    assert stats.p_above(a, 0.9) == pytest.approx(scipy_stats.t.sf(math.sqrt(3), 2), rel=1e-9)
    assert stats.p_above(a, 0.9) == pytest.approx(
        scipy_stats.ttest_1samp(a, 0.9, alternative="greater").pvalue, rel=1e-9)


def test_seeds_to_resolve_is_the_fewest_seeds_whose_test_would_pass():
    # by hand, mean 0.92, s 0.02, target 0.90: t = √n must exceed t_{0.95, n−1}:
    # n = 4: 2 < 2.353; n = 5: 2.236 > 2.132
    assert 2 < T_95_3 and math.sqrt(5) > T_95_4
    assert stats.seeds_to_resolve(0.92, 0.02, 0.90) == 5
    for mean, std, target, alpha in ((0.941, 0.003, 0.94, 0.05), (0.95, 0.04, 0.9, 0.01), (0.5, 0.3, 0.2, 0.05)):
        n = stats.seeds_to_resolve(mean, std, target, alpha)
        passes = [(mean - target) * math.sqrt(k) / std > scipy_stats.t.ppf(1 - alpha, k - 1) for k in (n - 1, n)]
        assert passes == [False, True] or (n == 2 and passes[1])
    assert stats.seeds_to_resolve(0.9, 0.01, 0.9) is None and stats.seeds_to_resolve(0.8, 0.01, 0.9) is None
    assert stats.seeds_to_resolve(0.91, 0.0, 0.9) == 2


# 3 settings × 3 seeds and one of a single seed, as a sweep leaves them (runs on file, no training).
ACCURACIES = {"model=a": [0.90, 0.92, 0.94], "model=b": [0.88, 0.89, 0.90], "model=c": [0.80, 0.81, 0.82],
              "model=d": [0.70]}


@pytest.fixture
def board_folder(tmp_path):
    job = 0
    for setting, values in ACCURACIES.items():
        for seed, value in enumerate(values):
            fake_run(tmp_path / str(job), [setting, f"trainer.seed={seed}"], value)
            job += 1
    return tmp_path


def test_a_leaderboard_states_intervals_p_values_against_the_top_and_ties(board_folder, capsys):
    from cifarbench.commands.report import main

    assert main([str(board_folder), "--target", "0.9"]) == 0
    printed = capsys.readouterr().out
    with open(board_folder / "leaderboard.csv") as f:
        rows = {row["setting"]: row for row in csv.DictReader(f)}
    assert list(rows) == ["model=a", "model=b", "model=c", "model=d"]
    for setting, values in ACCURACIES.items():
        row = rows[setting]
        if len(values) > 1:
            n, mean, sem = len(values), sum(values) / len(values), scipy_stats.sem(values)
            expected = scipy_stats.t.interval(0.95, n - 1, loc=mean, scale=sem)
            for column in ("objective", "final_test_acc"):
                assert (float(row[f"{column}_ci_low"]), float(row[f"{column}_ci_high"])) == pytest.approx(
                    expected, rel=5e-6)  # (the CSV has six significant digits)
            assert float(row["p_above_target"]) == pytest.approx(
                scipy_stats.ttest_1samp(values, 0.9, alternative="greater").pvalue, rel=5e-6)
        if setting != "model=a" and len(values) > 1:
            assert float(row["p_vs_top"]) == pytest.approx(
                scipy_stats.ttest_ind(ACCURACIES["model=a"], values, equal_var=False).pvalue, rel=5e-6)
    # b is 0.03 below a with p ≈ 0.1: not separable; c is 0.11 below with p < 0.05
    assert [rows[s]["vs_top"] for s in rows] == ["top", "tied with top", "below top", "one seed"]
    assert rows["model=d"]["objective_ci_low"] == rows["model=d"]["p_vs_top"] == ""
    assert [rows[s]["above_target"] for s in rows] == ["not resolved", "no (mean not above)", "no (mean not above)",
                                                       "one seed"]
    assert rows["model=a"]["seeds_for_target"] == "5" and rows["model=b"]["seeds_for_target"] == ""

    low, high = scipy_stats.t.interval(0.95, 2, loc=0.92, scale=scipy_stats.sem(ACCURACIES["model=a"]))
    p_b = scipy_stats.ttest_ind(ACCURACIES["model=a"], ACCURACIES["model=b"], equal_var=False).pvalue
    markdown = (board_folder / "leaderboard.md").read_text()
    line_a = next(line for line in markdown.splitlines() if line.startswith("| model=a |"))
    assert f"| 0.9200 [{low:.4f}, {high:.4f}] |  | top | 0.9200 ± 0.0200 [{low:.4f}, {high:.4f}] |" in line_a
    assert line_a.endswith("| 0.9000 | 0.113 | not resolved | 5 |")
    line_b = next(line for line in markdown.splitlines() if line.startswith("| model=b |"))
    assert f"| {p_b:.3g} | tied with top |" in line_b and line_b.endswith("| never |")
    assert markdown in printed
    page = (board_folder / "report.html").read_text()
    assert "tied with top" in page and "95% confidence interval" in page and 'data-key="p_above_target"' in page


def test_without_a_target_the_markdown_has_no_target_columns_and_the_figure_shows_the_intervals(board_folder):
    from matplotlib.colors import to_hex
    from matplotlib.container import ErrorbarContainer

    from cifarbench.report import write_report
    from cifarbench.report.figures import final_acc_figure

    board, = write_report(board_folder, level=0.9)
    assert "target" not in (board_folder / "leaderboard.md").read_text()
    rows = {row["setting"]: row for row in board.setting_rows}
    expected = scipy_stats.t.interval(0.9, 2, loc=0.92, scale=scipy_stats.sem(ACCURACIES["model=a"]))
    row = rows["model=a"]
    assert (row["final_test_acc_ci_low"], row["final_test_acc_ci_high"]) == pytest.approx(expected)
    figure = final_acc_figure(board.settings, board.setting_rows, "Final test accuracy per setting", board.level)
    figure.draw_without_rendering()
    axis, = figure.axes
    assert "90% confidence interval" in axis.get_xlabel()
    texts = [t.get_text() for t in axis.texts]
    assert sum("tied with top" in text for text in texts) == 1
    errors = [c for c in axis.containers if isinstance(c, ErrorbarContainer)]
    # bottom to top: d, c, b, a; each error bar spans its interval (none for one seed)
    ends = [sorted(segment[:, 0]) for container in errors for segment in container.lines[2][0].get_segments()]
    assert ends[-1] == pytest.approx(list(expected)) and ends[0] == pytest.approx([0.70, 0.70])
    assert to_hex(axis.patches[-1].get_facecolor()) != to_hex(axis.patches[0].get_facecolor())


@pytest.mark.parametrize("args, message", [
    (["--level", "95"], "error: --level is a probability in (0, 1), such as 0.95, not 95"),
    (["--target", "94"], "error: --target is an accuracy as a fraction in (0, 1), such as 0.94, not 94"),
])
def test_a_level_or_target_out_of_range_is_one_line(tmp_path, capsys, args, message):
    from cifarbench.commands.report import main

    with pytest.raises(SystemExit) as exit_:
        main([str(tmp_path), *args])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith(message)
