"""Published results tables are the committed JSON of a named command, formatted by that command's own formatter.

Each results table sits in a marked block ``<!-- NAME:begin -->`` ... ``<!-- NAME:end -->``; the test reads the committed
JSON (never times or samples anything) and compares the block with the command's formatting of it. Tables that combine
several runs or predate a formatter (docs/learned.md, adasde.md's shipped files, REPRODUCTION.md) are checked cell by
cell, to the digits shown. ``TABLES`` classifies every table of the covered pages, so a new results table cannot stay
loose.
"""

import importlib.util
import json
import re
from pathlib import Path

import pytest

from erkguid.evaluation import read_results
from erkguid.experiments.generate_bench import format_table
from erkguid.experiments.overhead import format_cases, format_overhead
from erkguid.experiments.sampler_cost import format_sampler_table
from tests.test_paper_official import _shown

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def _block(doc: Path, name: str, indent: str = "") -> str:
    """The text between ``<!-- name:begin -->`` and ``<!-- name:end -->`` (markers at ``indent``, e.g. in a list item)."""
    md = doc.read_text()
    begin, end = f"{indent}<!-- {name}:begin -->\n", f"\n{indent}<!-- {name}:end -->"
    assert md.count(begin) == 1 and md.count(end) == 1, f"{doc.name}: block {name!r} missing or repeated"
    return md[md.index(begin) + len(begin):md.index(end)]


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_tune_evidence_table_is_the_committed_json():
    res = json.loads((DOCS / "tune" / "evidence.json").read_text())
    assert len(res["rows"]) == 32 and {r["nfe"] for r in res["rows"]} == {5, 7, 11, 15}
    assert _block(DOCS / "tune.md", "tune:evidence") == _script("tune_evidence").table(res)


def test_ecosystem_diffusers_schedulers_table_is_the_committed_json():
    res = json.loads((DOCS / "ecosystem" / "diffusers_schedulers.json").read_text())
    assert (res["steps"], res["repeats"], res["w_stiff"], res["threads"]) == (20, 5, 1.0, 1)
    rows = res["rows"]
    assert len(rows) == 6 and all(r["reload_ok"] for r in rows)
    assert all(r["strength0_max_diff"] == 0.0 for r in rows)  # the page says: bit-identical at w = 0
    table = _script("diffusers_schedulers_check").format_table(res)
    assert _block(DOCS / "ecosystem.md", "ecosystem:diffusers-schedulers") == table
    md = " ".join((DOCS / "ecosystem.md").read_text().split())
    ratio = [r["ratio_erk_vs_stock"] for r in rows]
    step = [r["step_time_erk_s"] - r["step_time_stock_s"] for r in rows if "step_time_erk_s" in r]
    assert f"the whole-pipeline ratio ({min(ratio):.2f}-{max(ratio):.2f} in this run)" in md
    assert f"ERK-Guid adds {1e3 * min(step):.0f}-{1e3 * max(step):.0f} ms per 20-step run here" in md
    assert f"({1e3 * min(step) / 20:.1f}-{1e3 * max(step) / 20:.1f} ms per step" in md


def _table_lines(md: str, start: str, stop: str) -> list[list[str]]:
    """The data rows (cells, bold markers removed) of the one table between ``start`` and ``stop``."""
    sec = md[md.index(start):md.index(stop)]
    rows = [ln for ln in sec.splitlines() if ln.startswith("|")][2:]
    return [[c.strip().replace("*", "") for c in ln.split("|")[1:-1]] for ln in rows]


def _numbers(cell: str) -> list[str]:
    return re.findall(r"[-+]?\d*\.?\d+", cell)


def test_learned_md_table10_is_the_committed_json():
    """Table 10's columns: `erkguid bench --suite paper ... --tables table10,table11` (fig4-table10-table11.json), the
    Table 2 column and Heun 32 steps from official.json's `table2` rows (the same 16-step grid and seeds)."""
    t10 = [r for r in json.loads((DOCS / "learned" / "fig4-table10-table11.json").read_text())["rows"] if r["table"] == "table10"]
    t2 = [r for r in json.loads((DOCS / "learned" / "official.json").read_text())["rows"] if r["table"] == "table2"]
    lines = _table_lines((DOCS / "learned.md").read_text(), "### Table 10 analogue", "Paper, Table 10")
    assert [ln[0] for ln in lines] == ["tree2d-learned", "digits-learned", "tree2d-exact", "digits-exact"]
    for target, erk, tab2, *taus, heun32 in lines:
        mine = [r for r in t10 if r["model"] == target]
        (base,) = [r for r in mine if r["solver"] == "heun" and r["w_stiff"] == 0]
        (w1,) = [r for r in mine if r["solver"] == "heun" and r["w_stiff"] == 1.0 and r["w_con"] == 0.5]
        assert all(map(_shown, _numbers(erk), [w1["err_ratio"], w1["err_ratio_lo"], w1["err_ratio_hi"]])), (target, erk)
        plain = {r["steps"]: r for r in t2 if r["model"] == target and r["w_stiff"] == 0}
        (half,) = [r for r in t2 if r["model"] == target and r["steps"] == 16 and r["w_stiff"] == 0.5]
        assert plain[16]["err_mean"] == base["err_mean"] and half["w_con"] == 0.5 and half["nfe"] == 31
        assert _shown(tab2, half["err_ratio"]) and _shown(heun32, plain[32]["err_mean"] / plain[16]["err_mean"])
        adaptive = [r for r in mine if r["solver"] == "adaptive_heun"]
        assert [r["variant"] for r in adaptive] == ["tau=0.5", "tau=1", "tau=2", "tau=5", "tau=10"]
        for cell, r in zip(taus, adaptive, strict=True):
            ratio, nfe = _numbers(cell)
            assert _shown(ratio, r["err_ratio"]) and int(nfe) == round(r["nfe"]), (target, cell)


def test_learned_md_former_tune_table_is_the_committed_presets():
    """The former `erkguid tune TARGET` table: each row's chosen setting and held-out figures are its preset's."""
    lines = _table_lines((DOCS / "learned.md").read_text(), "## The former `erkguid tune TARGET`", "Tuned, DEIS gains")
    assert len(lines) == 5
    for command, chosen, ratio, dfd in lines:
        target, solver, nfe, objective = re.fullmatch(
            r"`erkguid tune (\S+) --solver (\S+) --nfe (\d+) --objective (\w+)`", command).groups()
        p = json.loads((DOCS / "learned" / f"{target}-{solver}-nfe{nfe}-{objective}.json").read_text())
        h = p["heldout"]
        assert (p["target"], p["solver"], p["nfe"], p["objective"]) == (target, solver, int(nfe), objective)
        assert all(map(_shown, _numbers(chosen), [p["w_stiff"], p["w_con"]])), command
        assert all(map(_shown, _numbers(ratio), [h["err_ratio"], *h["err_ratio_ci"]])), command
        shown = _numbers(dfd)
        assert all(map(_shown, shown[:3], [h["fd_delta"], *h["fd_delta_ci"]])), command
        if len(shown) == 4:  # "(of F)": the held-out Heun FD the change is relative to
            assert _shown(shown[3], h["fd"] - h["fd_delta"]), command


def test_learned_md_models_table_is_the_shipped_manifest():
    """Parameters, training steps and final loss (and the classifier's test figures) of every shipped model."""
    manifest = json.loads((ROOT / "src" / "erkguid" / "data" / "models" / "manifest.json").read_text())
    lines = _table_lines((DOCS / "learned.md").read_text(), "## Shipped models", "`manifest.json` records")
    assert len(lines) == 5
    for name, _data, _arch, params, steps, loss, _role in lines:
        m = manifest[name.strip("`")]
        assert params == f"{m['params'] / 1000:.0f}k" and int(steps) == m["steps"], name
        if "test CE" in loss:
            assert _shown(_numbers(loss)[0], m["final_loss"]) and _shown(_numbers(_role)[-1], m["test_accuracy"]), name
        else:
            assert _shown(loss, m["final_loss"]), name


def test_ecosystem_generate_bench_table_is_the_committed_json():
    res = read_results(DOCS / "ecosystem" / "generate_bench.json")
    c = res["config"]
    assert (c["threads"], c["repeats"], c["steps"], c["w_stiff"]) == (1, 5, 18, 1.0)
    assert [s["solver"] for s in res["summary"]] == ["heun", "dpm2"] and len(res["runs"]) == 5 * 4
    assert _block(DOCS / "ecosystem.md", "ecosystem:generate-bench") == format_table(res)
    heun, dpm2 = res["summary"]
    md = " ".join((DOCS / "ecosystem.md").read_text().split())
    assert (f"{1e3 * heun['extra_sampler_time_per_run_s']:.1f} ms per run for Heun and "
            f"{1e3 * dpm2['extra_sampler_time_per_run_s']:.1f} ms for DPM-Solver-2") in md
    readme = " ".join((ROOT / "README.md").read_text().split())  # README's end-to-end bullet: the same run
    for s in (heun, dpm2):
        assert (f"{s['plain']['samples_per_s']:.2f} vs {'Heun + ERK-Guid ' if s is heun else ''}"
                f"{s['erk']['samples_per_s']:.2f}") in readme
        assert f"a ratio of {s['throughput_ratio_erk_over_plain']:.3f}" in readme


@pytest.fixture(scope="module")
def overhead():
    res = read_results(DOCS / "performance" / "overhead.json")
    assert res["threads"] == 1 and len(res["cases"]) == 2  # the full command (not --sampler-only), one torch thread
    assert res["sampler"]["timing"][0]["rounds"] == 9
    return res


def test_performance_md_current_table_is_the_committed_overhead_json(overhead):
    assert _block(DOCS / "performance.md", "performance:sampler") == format_sampler_table(overhead["sampler"])
    assert format_sampler_table(overhead["sampler"]) in format_overhead(overhead)  # the command prints the same table


def test_readme_cost_table_and_figures_are_the_committed_overhead_json(overhead):
    readme = (ROOT / "README.md").read_text()
    table = format_cases(overhead["cases"]).split("\n")[:4]
    assert _block(ROOT / "README.md", "readme:cost", indent="  ") == "\n".join("  " + ln for ln in table)
    t, noise = overhead["sampler"]["timing"][0], overhead["sampler"]["noise"]
    cost = readme[readme.index("- **Cost**"):readme.index("## Layout")]
    assert f"load {overhead['loadavg'][0]:.1f}" in cost
    assert f"Heun takes {t['heun_over_kdiff']:.2f}×" in cost and f"`dpmpp_2m` {t['dpmpp_2m_over_kdiff']:.2f}×" in cost
    assert f"{t['erk_on_over_off']:.2f}× in that run" in cost
    lo, hi = sorted(f"{r['per_sample_over_batched']:.1f}" for r in noise)
    assert f"noise costs {lo}–{hi}× one batched" in cost
    pct = sorted(100 * c["correction_over_denoiser"] for c in overhead["cases"])
    assert f"it is the {pct[0]:.1f}–{pct[-1]:.1f}% above" in cost


def test_sampler_table_without_k_diffusion_says_n_a(overhead):
    """Without k-diffusion (a test-only dependency) the run stores None for its figures: the table says n/a."""
    s = json.loads(json.dumps(overhead["sampler"]))
    t, o, m = s["timing"][0], s["ops_and_reads"][0], s["memory"]
    t["heun_over_kdiff"] = t["dpmpp_2m_over_kdiff"] = None
    for d in (o["ops_per_step"], o["host_reads_per_step"]):
        del d["kdiff_heun"], d["kdiff_dpmpp_2m"]
    del m["peak_allocated_state_tensors"]["kdiff:heun:0"], m["peak_allocated_state_tensors"]["kdiff:dpmpp_2m:0"]
    rows = format_sampler_table(s).splitlines()
    assert rows[2].endswith("| n/a | <= 1.05 |") and rows[3].endswith("| n/a | - |")
    assert "(k-diffusion n/a, n/a)" in rows[5] and "(k-diffusion n/a)" in rows[-3]


def test_validation_md_divergence_table_and_figures_are_the_committed_summary():
    res = json.loads((DOCS / "validation" / "divergence_sweep_summary.json").read_text())
    assert res["command"].startswith("python scripts/divergence_sweep.py") and "--quick" not in res["command"]
    summary = res["summary"]
    assert summary["guard_factor"] == 100.0
    md = (DOCS / "validation.md").read_text()
    assert _block(DOCS / "validation.md", "validation:divergence") == _script("divergence_sweep").format_table(summary)
    text = " ".join(md[md.index("**Why 100.**"):md.index("**Cost.**")].split())
    for shown in (f"({summary['runs']} runs)", f"{summary['runs_ending_beyond_1000x_data']} runs that ended beyond 1000x",
                  f"lets through is {summary['largest_final_norm_over_data_let_through']:.0f}x",
                  f"{summary['blown_plain_solver_runs (w_stiff=0, never size-checked)']} are plain-solver runs",
                  f"of the {summary['blown_erk_runs_let_through']} ERK-Guid runs, "
                  f"{summary['of_which_the_plain_solver_also_ends_beyond_10x']} are on grids",
                  f"ratio of {summary['healthy_peak_ratio_max']:.1f}"):
        assert shown in text, shown
    assert summary["of_which_raised"] == summary["runs_ending_beyond_1000x_data"]  # "every one of them raises"
    caught = summary["healthy_runs_caught"]
    assert f"({caught['10']} at 10, {caught['20']} at 20, {caught['50']} at 50)" in text and caught["100"] == 2


def test_adasde_md_shipped_files_table_is_the_shipped_json():
    """docs/adasde.md's table of shipped coefficient files: every cell is its file's (written by
    `scripts/ship_adasde.py` / `erkguid distill`), to the digits shown."""
    lines = _table_lines((DOCS / "adasde.md").read_text(), "| file | model | NFE | grid (then 0)", "### In `erkguid bench`")
    files = sorted(p.stem for p in (ROOT / "src" / "erkguid" / "data" / "adasde").glob("*.json"))
    assert sorted(ln[0].strip("`") for ln in lines) == files
    for name, model, nfe, grid, gamma_max, seconds, check, gammas in lines:
        d = json.loads((ROOT / "src" / "erkguid" / "data" / "adasde" / f"{name.strip('`')}.json").read_text())
        m = d["meta"]
        assert (model.strip("`"), int(nfe)) == (m["model"], d["nfe"]), name
        cells = [(grid, d["sigmas"]), (gamma_max, [d["gamma_max"]]), (seconds, [m["seconds"]]),
                 (check, [m["check"]["sliced_w2"]]), (gammas, d["mapped"]["gamma"])]
        for cell, values in cells:
            shown = _numbers(cell)
            assert len(shown) == len(values) and all(map(_shown, shown, values)), (name, cell)


def test_reproduction_md_results_table_is_the_committed_runs():
    """REPRODUCTION.md's Results table: the rows of the committed `erkguid reproduce` runs, formatted, in this order."""
    from erkguid.experiments.reproduce import format_rows

    runs = [("fig1", "fig1"), ("tree2d-fig2", "fig2"), ("digits64-fig2", "fig2"), ("tree2d-fig3", "fig3"),
            ("digits64-fig3", "fig3"), ("fig6a", "fig6a"), ("digits64-fig7", "fig7")]
    want = []
    for stem, name in runs:
        res = json.loads((DOCS / "reproduce" / f"{stem}.json").read_text())
        assert res["name"] == name
        want += format_rows(res["claims"], f"erkguid reproduce {name}").splitlines()[2:]
    lines = (ROOT / "REPRODUCTION.md").read_text().splitlines()
    k = lines.index("| figure | claim | paper | ours | command | reproduces |")
    got = [ln for ln in lines[k + 2:k + 2 + len(want) + 1] if ln.startswith("|")]
    assert got == want


def test_safety_md_kill_resume_table_is_the_committed_json():
    res = json.loads((DOCS / "safety" / "kill_resume_check.json").read_text())
    assert res["kills_per_job"] == 20 and all(res[job]["identical"] for job in ("generate", "train", "distill"))
    assert _block(DOCS / "safety.md", "safety:kill-resume") == _script("kill_resume_check").format_table(res)


# Every table of these pages, by its header row: a results table is a marked JSON block (tested above) or is
# checked cell by cell against its JSON by the named test; the others document an API or contract (no results),
# or are one-off historical comparisons that name their command and commits (docs/performance.md).
BLOCK, CHECKED, API, ONE_OFF = "block", "checked", "api", "one-off"
TABLES = {
    "docs/tune.md": {"| spec | model |": API, "| model | NFE | tuned sampler |": BLOCK},
    "docs/ecosystem.md": {"| name | erkguid solver | at w_stiff = 0 |": API, "| graph | state |": API,
                          "| class | stock class | ERK pair (Table 9) |": API, "| scheduler | w=0 vs stock (max abs) |": BLOCK,
                          "| solver | w_stiff | samples/s |": BLOCK},
    "docs/performance.md": {"| figure | this run | target |": BLOCK, "| figure | before | after | target |": ONE_OFF,
                            "| figure | after the merge (two runs) | target |": ONE_OFF, "| | runs | median |": ONE_OFF,
                            "| `[B, n]` | batched randn |": ONE_OFF},
    "docs/engine.md": {"| concept | place |": API},
    "docs/diagnostics.md": {"| function | what it does | paper |": API},
    "docs/learned.md": {"| name | data | architecture | params |": CHECKED,  # test_learned_md_models_table_...
                        "| target | steps | Heun err / FD |": CHECKED,  # test_paper_official.py: table2
                        "| target | steps | guidance | err ratio": CHECKED,  # test_paper_official.py: table3
                        "| target | solver | NFE (steps) |": CHECKED,  # test_paper_official.py: table4
                        "| target | ERK w=1, w_con=0.5 (NFE 31) |": CHECKED,  # test_learned_md_table10_...
                        "| table | target | solver | steps | NFE |": CHECKED,  # test_paper_official.py: format_official
                        "| command | chosen (w_stiff, w_con) |": CHECKED},  # test_learned_md_former_tune_table_...
    "docs/adasde.md": {"| file | model | NFE | grid (then 0) |": CHECKED,  # test_adasde_md_shipped_files_table_...
                       "| method | setting | NFE | err mean |": BLOCK,  # test_adasde_docs.py (bench-quick:adasde)
                       "| arm | sliced W2": BLOCK, "| paired difference": BLOCK},  # test_adasde_docs.py (adasde-eval)
    "REPRODUCTION.md": {"| figure | claim | paper | ours | command | reproduces |": CHECKED},  # test_reproduction_md_...
    "docs/guidance.md": {"| adapter | network contract | conversion |": API,
                         "| guidance | variant | steps | NFE loop |": CHECKED},  # test_guidance_docs.py
    "docs/solvers.md": {"| name | file | step function |": API, "| solver | NFE≈7 | NFE≈15 |": CHECKED,  # test_solvers_docs.py
                        "| solver | NFE≈7 | NFE≈11 | NFE≈15 | NFE≈23 |": BLOCK},  # test_bench.py (bench-full)
    "docs/safety.md": {"| item | class | before | after |": ONE_OFF,  # aaf3fa7 vs aa5e664, named on the page
                       "| job | kills | inside a write |": BLOCK},
    "docs/validation.md": {"| argument | accepted | refused": API, "| runs | final samples' largest norm |": BLOCK},
    "README.md": {"| command | what it does |": API, "| NFE | w_stiff | w_con | err mean |": CHECKED,  # test_demo_readme.py
                  "| state | one denoiser eval |": BLOCK},
}


@pytest.mark.parametrize("page", sorted(TABLES))
def test_every_table_of_the_page_is_classified(page):
    """A new table on these pages must be a JSON-backed block or be classified here (so no results table is loose),
    and exactly the block tables lie inside a ``begin`` / ``end`` marked block."""
    lines = (ROOT / page).read_text().splitlines()
    inside, depth = [], 0
    for ln in lines:
        depth += ln.strip().endswith(":begin -->") - ln.strip().endswith(":end -->")
        inside.append(depth > 0)
    starts = [k for k, ln in enumerate(lines[:-1]) if ln.lstrip().startswith("|") and lines[k + 1].lstrip().startswith("|--")]
    used = set()
    for k in starts:
        kinds = [(head, kind) for head, kind in TABLES[page].items() if lines[k].strip().startswith(head)]
        assert len(kinds) == 1, (page, lines[k][:60])
        used.add(kinds[0][0])
        assert inside[k] == (kinds[0][1] == BLOCK), (page, lines[k][:60])
    assert used == set(TABLES[page]), (page, set(TABLES[page]) - used)
