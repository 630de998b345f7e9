#!/usr/bin/env bash
# Execute the notebooks under nbmake in FOLDER (copies: make notebooks / make site copy them there first), keeping
# their outputs. Usage: PY=.venv/bin/python scripts/execute_notebooks.sh FOLDER PROFILE TIMEOUT_S WORKERS THREADS
#
# WORKERS notebooks run at a time, each kernel on THREADS cores. Chapters 3 and 5 share their measured runs within the
# chapter (3.5 reads what 3.1-3.4 trained, 5.3 the plain LoRA of 5.1), so each runs in a pytest of its own, in order,
# beside the others: a kernel more each while it lasts, rather than a core left idle at the end (in one lane after
# chapter 3, chapter 5 made that lane 777 s long where the others took 682 s). With WORKERS=1 everything runs one
# notebook at a time. Each pytest writes a junit file (junit*.xml) with every notebook's seconds, which
# docs/build_site.py records. --dist worksteal: a worker that runs out of notebooks takes one queued behind another
# (pytest-xdist's default hands out its queues at the start: in a `make site` run 2.4 waited behind 2.3 while the other
# core had nothing left to do).
set -uo pipefail
folder=$1 profile=$2 timeout=$3 workers=$4 threads=$5
py=$(realpath -s "${PY:-.venv/bin/python}")  # -s: keep the venv's symlink, which makes it the venv
cd "$folder" || exit 1
export FTKIT_PROFILE=$profile OMP_NUM_THREADS=$threads MKL_NUM_THREADS=$threads
ordered=(notebooks/03_overfitting notebooks/05_field_advice)  # each in order, one notebook at a time

nbmake() {
  "$py" -m pytest --nbmake --nbmake-timeout="$timeout" --overwrite --durations=0 -q -p no:cacheprovider \
    -o junit_family=xunit1 "$@"
}

status=0
if [ "$workers" -gt 1 ]; then
  pids=()
  for chapter in "${ordered[@]}"; do
    name=$(basename "$chapter")
    nbmake --junitxml="junit-$name.xml" "$chapter" >"$name.log" 2>&1 &
    pids+=($!)
  done
  nbmake -n "$workers" --dist worksteal --junitxml=junit.xml "${ordered[@]/#/--ignore=}" notebooks colab || status=1
  for i in "${!ordered[@]}"; do
    wait "${pids[$i]}" || status=1
    name=$(basename "${ordered[$i]}")
    echo "--- $name, run in order beside the others:"
    cat "$name.log"
  done
else
  nbmake --junitxml=junit.xml "${ordered[@]/#/--ignore=}" notebooks colab || status=1
  for chapter in "${ordered[@]}"; do
    nbmake --junitxml="junit-$(basename "$chapter").xml" "$chapter" || status=1
  done
fi
exit $status
