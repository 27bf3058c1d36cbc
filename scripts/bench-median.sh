# Sourced by the benchmarks that alternate gateway configurations or builds through ../shared/bench/proxy-bench.sh.
# gateway_median FILE FIELD: the median over the runs recorded in FILE (proxy-bench.sh output, appended once per
# round) of the gateway's requests/s (FIELD rps) or CPU µs per request (FIELD cpu).
gateway_median() {
    awk -v field="$2" '
        $1 == "gateway" && $3 == "rps" { v[++i] = (field == "rps" ? $2 : $9) }
        END { n = i; for (x = 1; x <= n; x++) for (y = x + 1; y <= n; y++) if (v[y] < v[x]) { t = v[x]; v[x] = v[y]; v[y] = t }; print (n % 2 ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2) }
    ' "$1"
}
