#!/usr/bin/env bash
# The MPI tests (registered by tests/CMakeLists.txt when EDIFICE_MPI is on):
#   run_mpi_test.sh MPIEXEC DRIVER WORKDIR SCENARIO
# SCENARIO: identical (1, 2, 4 ranks and the single-process communicator give the same bytes),
# resume (2 -> 4 -> 1 ranks equals one uninterrupted run), kill (a rank killed mid-run ends
# the job with an error in under 30 s), throw (an exception on one rank ends the job naming the
# rank), hang (a rank that stops answering makes the others time out and end the job),
# mismatch (different options on one rank are reported at start).
set -uo pipefail
mpiexec=$1 driver=$2 work=$3 scenario=$4
rm -rf "$work" && mkdir -p "$work"
export EDIFICE_THREADS=1 EDIFICE_CACHE=0
# Sanitizer builds: Open MPI keeps allocations until exit in plugins it unloads, so
# LeakSanitizer sees one-frame stacks in unknown modules that no suppression can match. Leak
# checking is off for these runs only (ASan's memory-error checks stay on); Edifice's own
# distributed code is leak-checked by nn_tests' [distributed] cases (single-process path).
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0"
# --bind-to none: several ranks share the 2 cores; loopback transports only.
mpi_flags=(--oversubscribe --allow-run-as-root --bind-to none --mca btl self,vader)
run_np() {
  local np=$1; shift
  "$mpiexec" "${mpi_flags[@]}" -np "$np" "$driver" "$@"
}
fail() { echo "FAIL: $*"; exit 1; }

case $scenario in
  identical)
    for np in 1 2 4; do
      run_np "$np" --steps 20 --out "$work/params_np$np.safetensors" > "$work/np$np.log" 2>&1 ||
        { cat "$work/np$np.log"; fail "the run with $np ranks failed"; }
    done
    "$driver" --single-process --steps 20 --out "$work/params_single.safetensors" > "$work/single.log" 2>&1 ||
      { cat "$work/single.log"; fail "the single-process run failed"; }
    tail -2 "$work/np1.log"
    for other in np2 np4 single; do
      cmp "$work/params_np1.safetensors" "$work/params_$other.safetensors" ||
        fail "parameters after 20 steps differ between 1 rank and $other"
      cmp <(grep '^step' "$work/np1.log") <(grep '^step' "$work/$other.log") ||
        fail "the logged losses differ between 1 rank and $other"
    done
    echo "identical parameters and losses after 20 steps with 1, 2 and 4 ranks and one process"
    ;;
  resume)
    run_np 1 --steps 20 --out "$work/uninterrupted.safetensors" > "$work/full.log" 2>&1 ||
      { cat "$work/full.log"; fail "the uninterrupted run failed"; }
    # Steps 7 and 13 stop mid-epoch (3 batches per epoch): the data cursor must carry over.
    run_np 2 --steps 7 --checkpoint "$work/ckpt_a.safetensors" > "$work/a.log" 2>&1 ||
      { cat "$work/a.log"; fail "the 2-rank part failed"; }
    run_np 4 --steps 13 --resume "$work/ckpt_a.safetensors" --checkpoint "$work/ckpt_b.safetensors" > "$work/b.log" 2>&1 ||
      { cat "$work/b.log"; fail "the 4-rank part failed"; }
    run_np 1 --steps 20 --resume "$work/ckpt_b.safetensors" --out "$work/resumed.safetensors" > "$work/c.log" 2>&1 ||
      { cat "$work/c.log"; fail "the 1-rank part failed"; }
    cmp "$work/uninterrupted.safetensors" "$work/resumed.safetensors" ||
      fail "2 -> 4 -> 1 ranks differs from the uninterrupted run"
    cmp <(grep '^step' "$work/full.log") <(cat "$work/a.log" "$work/b.log" "$work/c.log" | grep '^step') ||
      fail "the per-step losses of the resumed parts differ from the uninterrupted run"
    echo "2 -> 4 -> 1 ranks (checkpoints at steps 7 and 13) equals the uninterrupted run"
    ;;
  kill)
    start=$(date +%s.%N)
    timeout 60 "$mpiexec" "${mpi_flags[@]}" -np 2 "$driver" --steps 200 --kill-rank 1 --at-step 5 > "$work/kill.log" 2>&1
    rc=$? elapsed=$(echo "$(date +%s.%N) - $start" | bc)
    cat "$work/kill.log" | tail -15
    [ "$rc" -ne 0 ] || fail "the job exited 0 although rank 1 was killed"
    [ "$rc" -ne 124 ] || fail "the job hung (still running after 60 s)"
    (( $(echo "$elapsed < 30" | bc) )) || fail "the job took ${elapsed}s to end (limit 30 s)"
    grep -q "rank 1" "$work/kill.log" || fail "the error does not name rank 1"
    echo "rank 1 killed at step 5: the job ended with exit code $rc after ${elapsed}s"
    ;;
  throw)
    start=$(date +%s.%N)
    timeout 60 "$mpiexec" "${mpi_flags[@]}" -np 2 "$driver" --steps 200 --throw-rank 1 --at-step 5 > "$work/throw.log" 2>&1
    rc=$? elapsed=$(echo "$(date +%s.%N) - $start" | bc)
    tail -15 "$work/throw.log"
    [ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] || fail "exit code $rc (want a failure, not a hang)"
    grep -q "edifice: rank 1 of 2: fit failed: injected failure at step 5" "$work/throw.log" ||
      fail "no error naming rank 1 and its exception"
    echo "an exception on rank 1 ended the job (exit code $rc) after ${elapsed}s"
    ;;
  hang)
    start=$(date +%s.%N)
    timeout 60 "$mpiexec" "${mpi_flags[@]}" -np 2 "$driver" --steps 200 --hang-rank 1 --at-step 5 --timeout 5 > "$work/hang.log" 2>&1
    rc=$? elapsed=$(echo "$(date +%s.%N) - $start" | bc)
    tail -15 "$work/hang.log"
    [ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] || fail "exit code $rc (want a failure, not a hang)"
    (( $(echo "$elapsed < 30" | bc) )) || fail "the job took ${elapsed}s to end (limit 30 s)"
    grep -q "edifice: rank 0 of 2: .* did not complete within 5 s" "$work/hang.log" ||
      fail "no timeout error from rank 0"
    echo "rank 1 hanging at step 5: rank 0 timed out and ended the job (exit code $rc) after ${elapsed}s"
    ;;
  mismatch)
    run_np 2 --steps 3 --mismatch-rank 1 > "$work/mismatch.log" 2>&1
    rc=$?
    cat "$work/mismatch.log" | tail -8
    [ "$rc" -ne 0 ] || fail "the job exited 0 with different options on rank 1"
    grep -q "rank 1 of 2 does not match rank 0 in the optimizer or clipping" "$work/mismatch.log" ||
      fail "the error does not name rank 1 and the optimizer"
    echo "the mismatch was reported"
    ;;
  *) fail "unknown scenario $scenario" ;;
esac
