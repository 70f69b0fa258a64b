# Sourced by the bench scripts: `locked CMD...` runs CMD holding the lock file
# PEER_BENCH_LOCK (default /tmp/edifice-build.lock; empty: no lock), so builds and
# measurements of concurrent users of the machine do not overlap.
lock="${PEER_BENCH_LOCK-/tmp/edifice-build.lock}"
locked() {
  if [[ -n "$lock" ]] && command -v flock >/dev/null; then flock "$lock" "$@"; else "$@"; fi
}
