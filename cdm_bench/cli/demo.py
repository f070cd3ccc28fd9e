"""``cdm-bench demo --out DIR [--quick]``: the whole flow on the embedded world."""

from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser("demo", help="train/load the embedded world, distil, generate, evaluate, leaderboard")
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--quick", action="store_true", help="CI health check (< 3 min); asserts no ordering")
    p.add_argument("--retrain", action="store_true", help="retrain the world's scorer and teacher")
    p.add_argument("--no-students", action="store_true", help="skip distillation (teacher rows only)")
    p.add_argument("--ablations", action="store_true", help="also distil the paper's two ablations")
    p.add_argument("--student-steps", type=int, default=None, help="override the students' step budget")
    p.set_defaults(func=run)


def run(args) -> int:
    from cdm_bench.toy.demo import run_demo

    report = run_demo(args.out, quick=args.quick, retrain=args.retrain, students=not args.no_students,
                      ablations=args.ablations, student_steps=args.student_steps)
    from cdm_bench.runfind import leaderboard_paths

    paths = leaderboard_paths(report.out)
    print(paths["md"].read_text())
    for name, check in report.checks.items():
        print(f"[{'ok' if check['ok'] else 'FAIL'}] {name}: {check['detail']}")
    print(f"demo took {report.timings['total_s'] / 60:.1f} min "
          f"({', '.join(f'{k} {v:.0f}s' for k, v in report.timings.items() if k != 'total_s')})")
    print(f"leaderboard: {paths['csv']} (also leaderboard.html, leaderboard.md)")
    return 0 if report.ok else 1
