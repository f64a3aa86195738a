"""`make mutation`: mutation testing of reconcile_pipeline/engine/ and defs/checks.py (mutmut).

    python tools/mutation.py run [--jobs N] [--minutes M] [TARGET ...]  # test, then report
    python tools/mutation.py report [TARGET ...]          # the report of what mutants/ holds

A TARGET is a source file or folder under what [tool.mutmut] only_mutate covers
(reconcile_pipeline/engine/merge.py, reconcile_pipeline/engine, reconcile_pipeline/defs/checks.py)
or a mutmut name glob (reconcile_pipeline.engine.merge.x_merge_field__mutmut_*); none means all.

`run` starts one embedded PostgreSQL for every mutant's pytest session (TEST_DATABASE_URL; a
server you set TEST_DATABASE_URL to yourself is used instead), keeps pytest's temporary
directories under a private root, and runs `mutmut run`. mutmut records which tests reach which
function and runs, for each mutant, only those tests, fastest first, stopping at the first
failure. Results are kept in mutants/: a run with no TARGET resumes where the last one stopped
(mutants of functions edited since are retested); a run with TARGETs retests the mutants they
name. --minutes stops the run then (as Ctrl-C does), keeping every result so far: the whole of
engine/ is several thousand mutants, hours on two cores, so time-box it and resume.
`rm -rf mutants` starts afresh: needed after editing [tool.mutmut], and after changing a
file that is not Python (the demo project file, SQL): mutmut copies those once and never
refreshes them, so the clean run fails on the stale copy. After changing tests, remove
mutants/mutmut-stats.json: mutmut maps only new tests to the functions they reach.

The report's kill rate is detected / tested: a mutant is detected when a selected test failed
(killed) or the run went over its time limit (timeout); it is undetected when every test that
reaches it passed (survived) or no selected test reaches its function (no tests).
Mutants not yet tested (an interrupted run) are counted apart.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import fnmatch
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import tomllib
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "reconcile_pipeline"


def mutmut_config() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mutmut"]


def mutatable_files() -> list[str]:
    """The source files mutmut mutates, as paths relative to the repository root."""
    patterns = mutmut_config()["only_mutate"]
    files = sorted(str(path.relative_to(ROOT)) for path in (ROOT / PACKAGE).rglob("*.py"))
    return [f for f in files if any(fnmatch.fnmatch(f, p) for p in patterns)]


def module_of(path: str) -> str:
    return path[: -len(".py")].replace("/", ".").removesuffix(".__init__")


def targets_to_globs(targets: list[str]) -> list[str]:
    """mutmut name globs for the TARGETs (an empty list means every mutant)."""
    files = mutatable_files()
    globs: list[str] = []
    for target in targets:
        if "/" not in target and not target.endswith(".py"):
            globs.append(target)  # already a mutmut name or glob
            continue
        try:
            rel = str((ROOT / target).resolve().relative_to(ROOT))
        except ValueError:
            sys.exit(f"mutation: {target} is outside the repository")
        chosen = [f for f in files if f == rel or f.startswith(rel.rstrip("/") + "/")]
        if not chosen:
            sys.exit(
                f"mutation: {target} is not mutated; [tool.mutmut] only_mutate covers "
                + ", ".join(mutmut_config()["only_mutate"])
            )
        globs += [f"{module_of(f)}.*" for f in chosen]
    return globs


# ---------------------------------------------------------------------------- run


@contextlib.contextmanager
def shared_postgres(scratch: Path):
    """TEST_DATABASE_URL for every pytest session of the run: the caller's, or a fresh
    embedded server stopped at the end."""
    if os.environ.get("TEST_DATABASE_URL"):
        yield os.environ["TEST_DATABASE_URL"]
        return
    sys.path.insert(0, str(ROOT))
    from reconcile_pipeline.db.embedded import EmbeddedPostgres

    with EmbeddedPostgres(home=scratch / "postgres").running() as info:
        yield info.admin_url


def run_for_at_most(command: list[str], env: dict, minutes: float | None) -> int:
    """Run mutmut; past `minutes`, interrupt it as Ctrl-C would (it stops its workers and keeps
    every result it has), so that a long run can be time-boxed and resumed later."""
    process = subprocess.Popen(command, cwd=ROOT, env=env)
    try:
        return process.wait(timeout=minutes * 60 if minutes else None)
    except subprocess.TimeoutExpired:
        print(f"\nmutation: time limit of {minutes:g} min reached, stopping mutmut", flush=True)
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            process.terminate()
            process.wait()
        return 0
    except KeyboardInterrupt:
        process.wait()
        raise


def run(targets: list[str], jobs: int, minutes: float | None = None) -> int:
    globs = targets_to_globs(targets)
    mutmut = Path(sys.executable).with_name("mutmut")
    if not mutmut.exists():
        sys.exit("mutation: mutmut is not installed in this venv (make mutation installs it)")
    scratch = Path(tempfile.mkdtemp(prefix="reconcile-mutation-"))
    started = time.monotonic()
    try:
        with shared_postgres(scratch) as admin_url:
            (scratch / "pytest").mkdir()
            env = dict(
                os.environ,
                TEST_DATABASE_URL=admin_url,
                # pytest's tmp_path directories for all sessions of this run, nowhere else
                PYTEST_DEBUG_TEMPROOT=str(scratch / "pytest"),
            )
            command = [str(mutmut), "run", "--max-children", str(jobs), *globs]
            print("mutation:", " ".join(command[1:]), flush=True)
            code = run_for_at_most(command, env, minutes)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    elapsed = time.monotonic() - started
    print(f"\nmutation: mutmut run took {elapsed / 60:.1f} min (exit code {code})\n", flush=True)
    report(targets)
    return code


# ---------------------------------------------------------------------------- report

DETECTED = {"killed", "timeout", "caught by type check"}


def status_of(exit_code: int | None) -> str:
    from mutmut.stats import status_by_exit_code

    return status_by_exit_code[exit_code]


def load_results(files: list[str]) -> dict[str, dict[str, int | None]]:
    """exit code by mutant name, by source file, as mutmut left them in mutants/."""
    import json

    results = {}
    for f in files:
        meta = ROOT / "mutants" / (f + ".meta")
        if meta.exists():
            results[f] = json.loads(meta.read_text())["exit_code_by_key"]
    return results


def function_start_line(source_path: Path, mutant_name: str) -> tuple[int, int] | None:
    """The (def line, first decorator line) of the function a mutant belongs to."""
    from mutmut.utils.format_utils import orig_function_and_class_names_from_key

    function, cls = orig_function_and_class_names_from_key(mutant_name)
    tree = ast.parse(source_path.read_text())
    scopes = [tree]
    if cls is not None:
        scopes = [n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name == cls]
    for scope in scopes:
        for node in scope.body:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == function:
                first = min([node.lineno] + [d.lineno for d in node.decorator_list])
                return node.lineno, first
    return None


def describe(path: str, mutant_name: str) -> tuple[int | None, str]:
    """(line in the source file, '-old  +new') for one mutant."""
    from mutmut.mutation.diff_apply import get_diff_for_mutant

    with contextlib.chdir(ROOT):
        try:
            diff = get_diff_for_mutant(mutant_name, path=path).splitlines()
        except Exception as exc:  # noqa: BLE001 - a report line, not a failure
            return None, f"(no diff: {exc})"
    old_lines, new_lines, first_changed = [], [], None
    old_no = 0
    for line in diff:
        if line.startswith(("---", "+++")):
            continue
        if line.startswith("@@"):
            old_no = int(line.split()[1].split(",")[0].lstrip("-")) - 1
            continue
        if line.startswith("-"):
            old_no += 1
            first_changed = first_changed or old_no
            old_lines.append(line[1:].strip())
        elif line.startswith("+"):
            first_changed = first_changed or old_no + 1
            new_lines.append(line[1:].strip())
        else:
            old_no += 1
    text = f"- {' / '.join(old_lines)}" + (
        f"   + {' / '.join(new_lines)}" if new_lines else "   + (removed)"
    )
    start = function_start_line(ROOT / path, mutant_name)
    if start is None or first_changed is None:
        return None, text
    def_line, first_line = start
    # get_diff_for_mutant diffs the function's text starting at its decorators, if any
    return first_line + first_changed - 1, text


def report(targets: list[str]) -> None:
    files = mutatable_files()
    globs = targets_to_globs(targets)
    results = load_results(files)
    if not results:
        print("mutation: no results in mutants/ yet (run `make mutation`)")
        return

    def selected(name: str) -> bool:
        return not globs or any(fnmatch.fnmatch(name, g) for g in globs)

    rows, survivors, untested = [], [], defaultdict(Counter)
    totals: Counter = Counter()
    for path, by_name in results.items():
        counts: Counter = Counter()
        for name, code in sorted(by_name.items(), key=lambda kv: mutant_sort_key(kv[0])):
            if not selected(name):
                continue
            status = status_of(code)
            counts[status] += 1
            if status == "survived":
                survivors.append((path, name))
            elif status == "no tests":
                untested[path][name.rpartition("__mutmut_")[0].rpartition(".")[2]] += 1
        if counts:
            rows.append((path, counts))
            totals.update(counts)

    header = (
        f"{'module':<44} {'mutants':>7} {'killed':>6} {'timeout':>7} {'survived':>8} "
        f"{'no tests':>8} {'not run':>7} {'kill rate':>9}"
    )
    print("Mutation report — kill rate = (killed + timeout) / tested mutants")
    print(header)
    print("-" * len(header))
    for path, counts in rows + [("TOTAL", totals)]:
        print(format_row(path, counts))
    other = {s: n for s, n in totals.items() if s not in REPORTED}
    if other:
        print("other statuses:", ", ".join(f"{s}: {n}" for s, n in sorted(other.items())))

    if survivors:
        print(f"\nSurviving mutants ({len(survivors)}): `mutmut show NAME` gives the full diff")
        described = [(path, *describe(path, name), name) for path, name in survivors]
        for path, line, text, name in sorted(described, key=lambda d: (d[0], d[1] or 0)):
            where = f"{path}:{line}" if line else path
            print(f"  {where:<44} {text}")
            print(f"  {'':<44} [{name}]")
    if untested:
        print("\nMutants no selected test reaches (by function):")
        for path, by_function in untested.items():
            listed = ", ".join(f"{fn} ({n})" for fn, n in sorted(by_function.items()))
            print(f"  {path}: {listed}")


REPORTED = {"killed", "timeout", "survived", "no tests", "not checked"}


def mutant_sort_key(name: str) -> tuple[str, int]:
    base, _, number = name.rpartition("__mutmut_")
    return base, int(number) if number.isdigit() else 0


def format_row(path: str, counts: Counter) -> str:
    total = sum(counts.values())
    not_run = counts["not checked"]
    tested = total - not_run
    detected = sum(counts[s] for s in DETECTED)
    rate = f"{100 * detected / tested:.1f}%" if tested else "-"
    return (
        f"{path:<44} {total:>7} {counts['killed']:>6} {counts['timeout']:>7} "
        f"{counts['survived']:>8} {counts['no tests']:>8} {not_run:>7} {rate:>9}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run_parser = sub.add_parser("run", help="test mutants, then print the report")
    run_parser.add_argument("--jobs", type=int, default=os.cpu_count() or 2)
    run_parser.add_argument(
        "--minutes", type=float, default=None, help="stop after this long (results are kept)"
    )
    run_parser.add_argument("targets", nargs="*")
    report_parser = sub.add_parser("report", help="print the report of what mutants/ holds")
    report_parser.add_argument("targets", nargs="*")
    args = parser.parse_args()
    if args.command == "run":
        return run(args.targets, args.jobs, args.minutes)
    report(args.targets)
    return 0


if __name__ == "__main__":
    sys.exit(main())
