#!/usr/bin/env bash
# Thread scaling of ours on a many-core machine, from prebuilt binaries (no build and no Python
# there): `peer_bench time CASE` with EDIFICE_THREADS = 1, 2, 4, 8, 16 for every peer-benchmark
# case, and the FMA peak at the same thread counts, in interleaved rounds (round r: the peak,
# then every case at every thread count), one process per measurement. Prints and writes
# docs/performance.md's `thread_scaling` block.
#
# Here (the build machine): pack build/bench/peer_bench, the shared libraries it loads (all but
# glibc's) and this script into one directory (about 45 MB, xz):
#   bash bench/run_thread_scaling.sh --bundle build/scaling-bundle
# There (e.g. `run` with carry ["build/scaling-bundle"]; $OUT receives the results):
#   bash build/scaling-bundle/run_thread_scaling.sh            # or: SCALING_THREADS="1 2 4" ...
# Back here: put the block into docs/performance.md (replaces the old one):
#   bash bench/run_thread_scaling.sh --apply FILES_AT/thread_scaling.md
# In a checkout with build/bench/peer_bench, `bash bench/run_thread_scaling.sh` runs it directly.
#
# Environment: SCALING_THREADS (default "1 2 4 8 16", counts above the machine's are skipped),
# SCALING_ROUNDS (default 3), SCALING_SECONDS (time each measurement fills, default 0.5),
# SCALING_OUT (default $OUT, else the current directory): thread_scaling.md and
# thread_scaling.tsv (every measurement).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cases=(sw_inf_b1 sw_inf_b32 sw_train_b32 hybrid_train_b32 window_attn)
declare -A title=([sw_inf_b1]="sliding-window inference, B1"
  [sw_inf_b32]="sliding-window inference, B32"
  [sw_train_b32]="sliding-window training step, B32"
  [hybrid_train_b32]="hybrid training step, B32"
  [window_attn]="window attention S4096 w256, fwd+bwd")

bundle() {
  local out="$1" root
  root="$(cd "$here/.." && pwd)"
  source "$root/bench/common/locked.sh"
  locked cmake --build "$root/build" --target peer_bench
  rm -rf "$out" && mkdir -p "$out/pack/lib"
  cp "$root/build/bench/peer_bench" "$out/pack/"
  # glibc (libc, libm with libmvec, the loader) must be the target's own; the rest travels.
  ldd "$root/build/bench/peer_bench" | awk '/=> \//{print $3}' |
    grep -Ev '/(libc|libm|libmvec|libpthread|libdl|librt|ld-linux[^/]*)\.so' |
    xargs -I{} cp -L {} "$out/pack/lib/"
  (cd "$root" && git rev-parse --short HEAD) > "$out/pack/COMMIT"
  tar -C "$out/pack" -cf - . | xz -T2 -6 > "$out/bundle.tar.xz"
  rm -rf "$out/pack"
  cp "${BASH_SOURCE[0]}" "$out/run_thread_scaling.sh"
  echo "bundle: $out ($(du -sh "$out" | cut -f1)); run: bash $out/run_thread_scaling.sh"
}

apply() {
  local block="$1" page
  page="$(cd "$here/.." && pwd)/docs/performance.md"
  awk -v block="$block" '
    /<!-- thread_scaling: begin/ { while ((getline line < block) > 0) print line; skip = 1; next }
    skip && /<!-- thread_scaling: end -->/ { skip = 0; next }
    !skip { print }' "$page" > "$page.tmp"
  grep -q "thread_scaling: begin" "$page.tmp" || { echo "no thread_scaling block in $page" >&2; exit 1; }
  mv "$page.tmp" "$page"
  echo "replaced the thread_scaling block of $page"
}

case "${1:-}" in
  --bundle) bundle "${2:?--bundle DIR}"; exit 0 ;;
  --apply) apply "${2:?--apply FILE}"; exit 0 ;;
  "") ;;
  *) echo "usage: run_thread_scaling.sh [--bundle DIR | --apply FILE]" >&2; exit 2 ;;
esac

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
if [[ -f "$here/bundle.tar.xz" ]]; then
  tar -C "$work" -xJf "$here/bundle.tar.xz"
  bin="$work/peer_bench"
  export LD_LIBRARY_PATH="$work/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  commit="$(cat "$work/COMMIT")"
else
  bin="$here/../build/bench/peer_bench"
  commit="$(git -C "$here" rev-parse --short HEAD 2>/dev/null || echo unknown)"
fi
out="${SCALING_OUT:-${OUT:-$PWD}}"
mkdir -p "$out"
cores="$(nproc)"
threads=()
for n in ${SCALING_THREADS:-1 2 4 8 16}; do ((n <= cores)) && threads+=("$n"); done
rounds="${SCALING_ROUNDS:-3}"
export PEER_BENCH_SECONDS="${SCALING_SECONDS:-0.5}" EDIFICE_CACHE_DIR="$work/cache"
unset EDIFICE_THREADS EDIFICE_ISA
cpu="$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
isa="$("$bin" machine | sed -n 's/.*"target":"\([^"]*\)".*/\1/p')"
echo "thread scaling on $cpu ($cores hardware threads, $isa), threads ${threads[*]}, $rounds rounds"
"$bin" export "$work/data" 2>/dev/null

tsv="$out/thread_scaling.tsv"
printf 'round\tcase\tthreads\tmedian_s\tmax_abs_diff\n' > "$tsv"
started=$SECONDS
for ((r = 1; r <= rounds; r++)); do
  "$bin" peak 100000000 "${threads[@]}" | sed -n 's/^RESULT //p' |
    grep -o '"threads":[0-9]*,"gflops":[0-9.]*' |
    sed 's/"threads":\([0-9]*\),"gflops":\(.*\)/\1\t\2/' |
    awk -v r="$r" '{printf "%d\tfma_peak\t%s\t%s\t0\n", r, $1, $2}' >> "$tsv"
  for c in "${cases[@]}"; do
    for n in "${threads[@]}"; do
      line="$(EDIFICE_THREADS=$n "$bin" time "$c" "$work/data" | sed -n 's/^RESULT //p')" || true
      med=NA diff=NA
      if [[ -n "$line" ]]; then
        med="$(sed 's/.*"median_s":\([^,]*\).*/\1/' <<< "$line")"
        diff="$(sed 's/.*"max_abs_diff_vs_export":\([^,]*\).*/\1/' <<< "$line")"
      else
        echo "peer_bench time $c failed at $n threads (recorded as NA)" >&2
      fi
      printf '%d\t%s\t%d\t%s\t%s\n' "$r" "$c" "$n" "$med" "$diff" >> "$tsv"
    done
  done
  echo "round $r done ($((SECONDS - started)) s)"
done

# Per case and thread count: the median over rounds; speed-up and efficiency per round
# (t1 / tn, divided by the same round's peak_n / peak_1), then their median.
titles="$(for c in "${cases[@]}"; do printf '%s\t%s\n' "$c" "${title[$c]}"; done)"
{
  echo "<!-- thread_scaling: begin (bash bench/run_thread_scaling.sh on a many-core machine) -->"
  echo
  echo "## Thread scaling beyond 2 cores ($cores-core machine)"
  echo
  echo "Generated by \`bench/run_thread_scaling.sh\` on $(date -u '+%Y-%m-%d %H:%M UTC') on"
  echo "$cpu ($cores hardware threads, JIT target $isa), peer_bench of commit $commit:"
  echo "\`peer_bench time CASE\` with \`EDIFICE_THREADS\` = ${threads[*]}, one process per"
  echo "measurement (median of the runs filling ${PEER_BENCH_SECONDS} s after warm-up), $rounds"
  echo "interleaved rounds (each: the FMA peak at every thread count, then every case at every"
  echo "thread count). Times: median over rounds; speed-up and efficiency"
  echo "(t1 / tn) / (peak_n / peak_1): median of the per-round values. Every run in"
  echo "\`thread_scaling.tsv\`."
  echo
  awk -F'\t' -v list="${threads[*]}" -v titles="$titles" '
    function med(s,   a, n, i, j, t) {
      n = split(s, a, " ")
      for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] + 0 < a[i] + 0) { t = a[i]; a[i] = a[j]; a[j] = t }
      return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
    }
    function ms(s) { return sprintf("%.3g ms", s * 1e3) }
    NR == 1 { next }
    $4 == "NA" { failed++; next }
    { v[$2, $3, $1] = $4; rounds[$1] = 1; if ($2 != "fma_peak") { seen[$2] = 1; if ($5 + 0 != 0) nonzero++ } }
    END {
      nt = split(list, th, " "); nc = split(titles, tl, "\n")
      hdr = "| case |"; sep = "|---|"
      for (i = 1; i <= nt; i++) { hdr = hdr " " th[i] " thr |"; sep = sep "---|" }
      print hdr " efficiency at " th[nt] " |"; print sep "---|"
      row = "| FMA peak, GFLOP/s |"
      for (i = 1; i <= nt; i++) { s = ""; for (r in rounds) s = s " " v["fma_peak", th[i], r]; pk[i] = med(s); row = row sprintf(" %.0f (%.2fx) |", pk[i], pk[i] / pk[1]) }
      print row " - |"
      for (k = 1; k <= nc; k++) {
        split(tl[k], ct, "\t"); c = ct[1]; if (!(c in seen)) continue
        row = "| " ct[2] " |"
        for (i = 1; i <= nt; i++) {
          s = ""; sp = ""; ef = ""
          for (r in rounds) {
            if (!((c, th[i], r) in v)) continue
            s = s " " v[c, th[i], r]
            if (!((c, th[1], r) in v)) continue
            x = v[c, th[1], r] / v[c, th[i], r]; sp = sp " " x
            ef = ef " " x / (v["fma_peak", th[i], r] / v["fma_peak", th[1], r])
          }
          row = row " " (s == "" ? "failed" : ms(med(s))) (i > 1 && sp != "" ? sprintf(" (%.2fx)", med(sp)) : "") " |"
        }
        print row (ef == "" ? " n/a |" : sprintf(" %.2f |", med(ef)))
      }
      print ""
      if (failed) print "- " failed " measurements failed (NA in the TSV; the process printed no result)."
      print (nonzero ? "- " nonzero " runs differed from the exported reference (max_abs_diff_vs_export != 0; see the TSV)." : "- Every run matched the exported reference exactly (max_abs_diff_vs_export 0).")
    }' "$tsv"
  echo
  echo "<!-- thread_scaling: end -->"
} > "$out/thread_scaling.md"
cat "$out/thread_scaling.md"
echo "wrote $out/thread_scaling.md and $tsv ($((SECONDS - started)) s)"
