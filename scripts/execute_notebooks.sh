#!/usr/bin/env bash
# Execute the notebooks under nbmake in FOLDER (copies: make notebooks / make site copy them there first), keeping
# their outputs. Usage: PY=.venv/bin/python scripts/execute_notebooks.sh FOLDER PROFILE TIMEOUT_S WORKERS THREADS
#
# WORKERS notebooks run at a time, each kernel on THREADS cores. Chapters 3 and 5 share their measured runs within
# the chapter (3.5 reads what 3.1-3.4 trained, 5.3 the plain LoRA of 5.1), so they run in one pytest of their own, in
# order (chapter 3, then chapter 5), beside the others: one kernel more while it lasts, rather than a core left idle
# once it is done (the others on WORKERS - 1 took 659 s where chapter 3 alone took about 480). With WORKERS=1 everything runs one notebook at a time. Each pytest
# writes a junit file (junit*.xml) with every notebook's seconds, which docs/build_site.py records. --dist worksteal: a
# worker that runs out of notebooks takes one queued behind another (pytest-xdist's default hands out its queues at
# the start: in a `make site` run 2.4 waited behind 2.3 while the other core had nothing left to do).
set -uo pipefail
folder=$1 profile=$2 timeout=$3 workers=$4 threads=$5
py=$(realpath -s "${PY:-.venv/bin/python}")  # -s: keep the venv's symlink, which makes it the venv
cd "$folder" || exit 1
export FTKIT_PROFILE=$profile OMP_NUM_THREADS=$threads MKL_NUM_THREADS=$threads
ordered="notebooks/03_overfitting notebooks/05_field_advice"  # in this order, one notebook at a time
ignored="--ignore=notebooks/03_overfitting --ignore=notebooks/05_field_advice"

nbmake() {
  "$py" -m pytest --nbmake --nbmake-timeout="$timeout" --overwrite --durations=0 -q -p no:cacheprovider \
    -o junit_family=xunit1 "$@"
}

if [ "$workers" -gt 1 ]; then
  nbmake --junitxml=junit-ordered.xml $ordered >ordered.log 2>&1 &
  ordered_pid=$!
  nbmake -n "$workers" --dist worksteal --junitxml=junit.xml $ignored notebooks colab
  others=$?
  wait $ordered_pid
  ordered_rc=$?
  echo "--- chapters 3 and 5, run beside the others:"
  cat ordered.log
else
  nbmake --junitxml=junit.xml $ignored notebooks colab
  others=$?
  nbmake --junitxml=junit-ordered.xml $ordered
  ordered_rc=$?
fi
[ "$others" = 0 ] && [ "$ordered_rc" = 0 ]
