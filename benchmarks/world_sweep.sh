#!/bin/bash
# The world benchmark's runs (issue 14), as recorded in benchmarks/results/distill_world.md.
#
#   benchmarks/world_sweep.sh            # every run below, two lanes of one process (1 thread) each
#   benchmarks/world_sweep.sh report     # only rebuild the CSVs, the frontier tables/plots, the diagnosis
#                                        # and the tables in distill_world.md
#
# Every run has its own directory under runs/distill_world/bench (resumable from its last
# checkpoint; finished evaluations are cached), so re-running continues where it stopped. A run
# is 1,000 steps on one core of the 2-core machine with the other lane busy: 12 min (dmd), 15 min
# (ddmd), 23 min (cdm) when nothing else runs (session 7); 30-45 min when the machine is shared.
# Add a guidance value, a seed or more steps by adding a line (or raising STEPS: the runs continue
# from their checkpoints).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
STEPS=${STEPS:-1000}
OUT=runs/wb
mkdir -p "$OUT"
T="--teacher bench --steps $STEPS --eval-every 200 --last 3 --prompts 128 --samples 2 --no-teacher --jobs 1 --threads 1"

one() {  # recipe guidance seed [extra args]: one run of recipes/world/<recipe>.yaml
  local r=$1 g=$2 s=$3; shift 3
  $PY benchmarks/distill_world.py $T --seeds "$s" --recipes "world/$r" --guidance "world/$r=$g" \
    --out "$OUT/s${s}_${r}_g$g.csv" "$@"
}
diag_fakelr() {  # diagnostic (not a method): dmd without CFG, the fake teacher's lr x10
  $PY benchmarks/distill_world.py $T --seeds 0 --recipes world/dmd --guidance world/dmd=1 --set fake.optim.lr=5e-5 \
    --work runs/distill_world/bench_diag_fakelr --out "$OUT/diag_fakelr_dmd_g1.csv"
}
diag_halfdm() {  # hypothesis test (not a method): cdm CA 7 with both DM terms at half weight
  $PY benchmarks/distill_world.py $T --seeds 0 --recipes world/cdm --guidance world/cdm=7 \
    --set losses.dm.weight=0.5 --set losses.cdm_offtraj.weight=0.5 \
    --work runs/distill_world/bench_diag_halfdm --out "$OUT/diag_halfdm_cdm_g7.csv"
}
long() {  # recipe guidance: seed 0 continued to 2,000 steps in a copy of its run (the 1,000-step run stays)
  local r=$1 g=$2 L=runs/distill_world/bench_long
  mkdir -p $L; [ -d $L/$r-g$g-seed0 ] || cp -r runs/distill_world/bench/$r-g$g-seed0 $L/
  $PY benchmarks/distill_world.py ${T/--steps $STEPS/--steps 2000} --seeds 0 --recipes "world/$r" \
    --guidance "world/$r=$g" --work $L --out "$OUT/long_${r}_g$g.csv"
}
teacher() {  # the teacher's rows: 1/2/4/50 steps without CFG, 50 steps over CFG, 3 sampling-noise sets
  $PY benchmarks/distill_world.py --teacher bench --teacher-only --prompts 128 --samples 2 --threads 1 \
    --teacher-cfg 1.5,2,3,4,6 --teacher-seeds 0,1,2 --out "$OUT/teacher.csv"
}

report() {
  local B=runs/distill_world/bench
  $PY benchmarks/distill_world.py --summarise "$OUT"/teacher_evals.csv "$OUT"/s*_evals.csv --last 3 \
    --out benchmarks/results/distill_world.csv
  local D; D=$(mktemp -d)   # the diagnostic runs, named by what they change
  sed 's/^dmd,/dmd_fake_lr_x10,/' "$OUT"/diag_fakelr_dmd_g1_evals.csv > "$D"/fakelr_evals.csv
  sed 's/^cdm,/cdm_half_dm,/' "$OUT"/diag_halfdm_cdm_g7_evals.csv > "$D"/halfdm_evals.csv
  $PY benchmarks/distill_world.py --summarise "$D"/*_evals.csv --last 3 --out benchmarks/results/distill_world_diag.csv
  $PY benchmarks/distill_frontier.py --evals benchmarks/results/distill_world_evals.csv --last 3
  $PY benchmarks/distill_world.py --summarise "$OUT"/teacher_evals.csv "$OUT"/long_*_evals.csv --last 3 \
    --out benchmarks/results/distill_world_long.csv   # the 2,000-step runs: their own frontier + curves
  $PY benchmarks/distill_frontier.py --evals benchmarks/results/distill_world_long_evals.csv --last 3
  $PY benchmarks/distill_diagnose.py --teacher bench --nfe 2 4 --teacher-points 50:1 50:1.5 50:3 4:1 2:1 \
    --runs $B/dmd-g1-seed0 $B/dmd-g3-seed0 $B/dmd-g5-seed0 $B/dmd-g8-seed0 $B/ddmd-g1-seed0 $B/ddmd-g4-seed0 \
      $B/ddmd-g7-seed0 $B/cdm-g4-seed0 $B/cdm-g7-seed0 $B/cdm-g10-seed0 $B/cdm_no_offtraj-g7-seed0 \
      $B/cdm_fixed_schedule-g7-seed0 runs/distill_world/bench_diag_fakelr/dmd-g1-seed0 \
      runs/distill_world/bench_diag_halfdm/cdm-g7-seed0 \
    --out benchmarks/results/distill_world_diagnosis.md --grid benchmarks/results/distill_world_grid.png
  $PY benchmarks/distill_writeup.py   # the write-up's tables from the files above
}

if [ "${1:-}" = report ]; then report; exit 0; fi
# the guidance curves (CA weight for the CDM family, the real score's CFG for dmd), seed 0 over
# guidance; then seeds 1-2 of each method's best point and of the ablations at the paper's CA 7.
# (Session 6 ran the first 19 runs and the teacher; session 7 the rest, from `one dmd 8 0` / `one cdm 10 0` on.)
laneA() { one cdm 4 0; one ddmd 1 0; one dmd 1 0; one cdm 7 0; one cdm_fixed_schedule 7 0; one cdm_no_offtraj 7 1
          one cdm_no_offtraj 7 2; one dmd 5 1; one dmd 5 2
          one cdm 10 0; one dmd 8 2; one cdm 10 1; one cdm_fixed_schedule 7 2; one ddmd 7 2; diag_halfdm
          one ddmd 2 2; }
laneB() { one ddmd 4 0; one dmd 3 0; one ddmd 2 0; diag_fakelr; one cdm_no_offtraj 7 0; one dmd 5 0; one cdm 7 1
          one cdm 7 2; one ddmd 4 1; one ddmd 4 2; teacher
          one dmd 8 0; one ddmd 7 0; one dmd 8 1; one cdm 10 2; one cdm_fixed_schedule 7 1; one ddmd 7 1
          one ddmd 2 1; }
# not run yet: one cdm 4 1; one cdm 4 2 (1-seed points on cdm's own 2-NFE frontier); one dmd 12 0; one cdm 14 0
laneA > "$OUT/laneA.log" 2>&1 &
laneB > "$OUT/laneB.log" 2>&1 &
wait
# then seed 0 of the best points continued to 2,000 steps (each copies a finished 1,000-step run)
{ long dmd 8; long cdm_no_offtraj 7; } > "$OUT/longA.log" 2>&1 &
{ long cdm 10; long ddmd 7; } > "$OUT/longB.log" 2>&1 &
wait
report
